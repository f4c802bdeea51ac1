"""The ``meshproxy.ca.v1.CertificateAuthority`` gRPC service over the CA core.

Owns the translation between the wire and `controlplane.ca.Issuer`: the ``authorization``
metadata and the protobuf request in; the response, or the core's refusal as a gRPC status
(``SignRefused.code``) with its message, out; one log line per issuance and per refusal, naming
the node and the peer address. It holds no policy: every decision is the core's.

Must not depend on: the CA's files (it is handed an `Issuer` and an `Authenticator`: the tokens
file, or Kubernetes' TokenReview), asyncio beyond
what grpc.aio calls it with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from controlplane.ca import Issuer
from controlplane.errors import SignRefused
from controlplane.tokens import Authenticator
from meshproxy._gen.ca.v1 import ca_pb2, ca_pb2_grpc

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CertificateAuthorityService(ca_pb2_grpc.CertificateAuthorityServicer):
    """Sign and TrustBundle, answered from an `Issuer` for callers an `Authenticator` vouches for."""

    def __init__(
        self, issuer: Issuer, authenticator: Authenticator, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._issuer = issuer
        self._authenticator = authenticator
        self._clock = clock

    async def Sign(
        self, request: ca_pb2.SignRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.SignResponse:
        authorization = _metadata(context, "authorization")
        ttl = request.requested_ttl.ToTimedelta() if request.HasField("requested_ttl") else None
        try:
            grant = await self._authenticator.authenticate(authorization)
            issued = self._issuer.sign(
                grant=grant,
                csr_pem=request.csr_pem,
                requested_ttl=ttl,
                now=self._clock(),
            )
        except SignRefused as exc:
            log.warning("refused Sign from node %r at %s: %s", request.node_id, context.peer(), exc)
            await context.abort(grpc.StatusCode[exc.code], str(exc))
        log.info(
            "issued %s to node %r at %s: serial %x, expires %s",
            issued.spiffe_id,
            request.node_id,
            context.peer(),
            issued.certificate.serial_number,
            issued.expires_at.isoformat(),
        )
        response = ca_pb2.SignResponse(
            certificate_chain_pem=issued.chain_pem, trust_bundle_pem=issued.bundle_pem
        )
        response.expires_at.FromDatetime(issued.expires_at)
        return response

    async def TrustBundle(
        self, request: ca_pb2.TrustBundleRequest, context: grpc.aio.ServicerContext
    ) -> ca_pb2.TrustBundleResponse:
        return ca_pb2.TrustBundleResponse(
            trust_bundle_pem=self._issuer.bundle_pem, trust_domain=self._issuer.trust_domain
        )


def add_to_server(service: CertificateAuthorityService, server: grpc.aio.Server) -> None:
    ca_pb2_grpc.add_CertificateAuthorityServicer_to_server(service, server)


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None
