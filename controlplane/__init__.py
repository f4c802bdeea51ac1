"""meshproxy's control plane: one grpc.aio server for the mesh's sidecars (DESIGN decision 6).

It serves ADS (xDS v3, SotW and delta), the certificate authority that issues SPIFFE X.509-SVIDs
and the management API, all on one port. Modules:

- `xds`: snapshots, the snapshot cache, the ADS protocol cores and server, the ledger;
- `mesh`: the mesh config (load, model) and its translation into xDS resources;
- `app`: the serving config and its sources (mesh file, raw xDS file, the API), hot reload;
- `file_watch`: wake-ups for changed source files (filesystem notifications, polling fallback);
- `ca`: the sans-I/O CA core (authorisation, CSR rules, lifetimes);
- `ca_store`: the CA's directory (load the CA, or create it at first start);
- `tokens`: bootstrap tokens and the identities they grant;
- `state_dir`: where ``serve`` keeps the CA and tokens by default, created on first use;
- `ca_service`, `management`, `admin`: the gRPC servicers and the metrics endpoint;
- `cli`: ``controlplane serve`` and ``controlplane token create``; `meshctl`: the management CLI;
- `demo`: ``make demo``, which drives the controlplane and three proxies as programs.

The controlplane depends on the proxy's packages (`meshproxy`), never the reverse.
Generated protobuf code lives in `meshproxy._gen` (shared with the proxy's identity agent; see
``proto/README.md``) and is imported only by the gRPC edges (`ca_service`, `management`,
`meshctl`).
"""
