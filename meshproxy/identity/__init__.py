"""Workload identity: SPIFFE IDs, X.509-SVIDs and their CA tooling, XFCC, certificate files.

- `spiffe`: the `SpiffeId` type, its rules, reading it from a certificate, peer matchers.
- `certs`: keys (ECDSA P-256, ML-DSA-65), the CA, CSRs, the SVID profile, bundles, PEM.
- `xfcc`: Envoy's ``x-forwarded-client-cert`` element and forwarding modes.
- `source`: chain, key and bundle from files, reloaded when a writer swaps them.

Nothing here imports asyncio or the TLS engine; the TLS layer (``meshproxy/tls``) and the CA
server (``controlplane``) build on it. See docs/identity.md.
"""
