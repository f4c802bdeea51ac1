"""meshproxy's control plane: one grpc.aio server for the mesh's sidecars (DESIGN decision 6).

Today it hosts the certificate authority that issues SPIFFE X.509-SVIDs; the xDS issue adds the
aggregated discovery service to the same server. Modules:

- `ca`: the sans-I/O CA core (authorisation, CSR rules, lifetimes);
- `ca_store`: the CA's state directory (load the CA, or create it at first start);
- `tokens`: bootstrap tokens and the identities they grant;
- `ca_service`: the gRPC servicer over the core;
- `cli`: ``controlplane serve`` and ``controlplane token create``.

Generated protobuf code lives in `meshproxy._gen` (shared with the proxy's identity agent; see
``proto/README.md``) and is imported only by the gRPC edges (`ca_service`, `management`,
`meshctl`).
"""
