"""Generated protobuf and gRPC code for the protos under ``proto/``; do not edit.

Regenerate with ``python proto/generate.py`` (see ``proto/README.md``). ``PROTO_SHA256`` records
the protos this code was generated from, so a stale copy is detected without grpcio-tools.
"""

PROTO_SHA256 = {
    "meshproxy/ca/v1/ca.proto": "31f00c307b0124b60a9d9a832ab88e3622630f08e67de7238762037edc6e7f56",
    "meshproxy/mesh/v1/management.proto": "a82681c0a346f39bda600ec674d7b61a89ddb13bfabf62a626b1233e84a1a666",
    "meshproxy/rbac/v1/pq.proto": "e7924f201c51146846736a069ec1f8f1b2f6e62569ba73966c411a70f3a3180d",
}
