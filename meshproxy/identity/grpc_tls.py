"""Why a gRPC call to the controlplane over TLS failed, in words an operator can act on.

Owns `describe_rpc_error`: the sidecar's two gRPC clients of the controlplane (the ADS client,
the CA client) verify the controlplane's certificate against a trust bundle; when that fails,
gRPC reports UNAVAILABLE with BoringSSL's reason buried in the details. This names the cause
(an unknown issuer, a certificate that does not name the host dialled, another handshake
failure) and the trust bundle involved, ahead of gRPC's own text, which is kept.

Must not depend on: asyncio, the TLS engine (gRPC's TLS is its own BoringSSL).
"""

from __future__ import annotations

import grpc

# Substrings of grpc-core's status details (grpcio 1.6x-1.8x) and what they mean.
_CAUSES = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the controlplane's certificate does not verify against the trust bundle {trust}",
    ),
    (
        "Hostname Verification Check failed",
        "the controlplane's certificate does not name the host dialled (or the SNI sent); "
        "add it to the controlplane's --xds-tls-san",
    ),
    ("WRONG_VERSION_NUMBER", "the controlplane does not speak TLS on this port (the plaintext 15010?)"),
    ("andshake failed", "the TLS handshake with the controlplane failed"),
)


def describe_rpc_error(exc: grpc.aio.AioRpcError, trust: object) -> str:
    """``exc``'s details, led by the TLS cause when there is one; ``trust`` names the bundle."""
    details = exc.details() or exc.code().name
    for marker, cause in _CAUSES:
        if marker in details:
            return f"{cause.format(trust=trust)} ({details})"
    return details
