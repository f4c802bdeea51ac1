"""One QUIC connection's TLS handshake under meshproxy's policy: groups, peer checks, evidence.

Owns `PqContext`, aioquic's TLS context with the decisions the TCP engine (``tls/engine.py``)
makes, made at the same points of the handshake so that a refused peer gets a TLS alert (in QUIC,
a CONNECTION_CLOSE with error 0x100 + the alert) before any application data flows:

- the groups offered and accepted are ``TlsConfig.pq_policy``'s (``tls/policy.py`` decides for
  QUIC as for TCP), in aioquic's numbering; the negotiated group is read from the ServerHello and
  checked against the policy's verdict;
- the peer's certificate chain is verified against ``trusted_ca`` and its URI SANs (SPIFFE IDs)
  against ``match_sans`` before our Finished is sent (client) or accepted (server); aioquic
  itself would check a DNS name against the SNI (meaningless for SPIFFE certificates) and a server
  would not check a client's chain at all;
- a server with ``trusted_ca`` asks for a client certificate, and under
  ``require_client_certificate`` refuses a client that sends none (certificate_required);
- the finished handshake is published as the TCP engine's ``Negotiated`` record.

`PqQuicConnection` is aioquic's ``QuicConnection`` with this context. Session tickets (and so
0-RTT) are never enabled: neither side is given a ticket store.
Must not import asyncio or sockets.
"""

from __future__ import annotations

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.connection import Limit, QuicConnection
from aioquic.quic.packet import QuicFrameType
from cryptography import x509

from meshproxy.errors import ConfigError
from meshproxy.quic import pqtls
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.engine import Negotiated, identity_refused, subject_alt_names, uri_sans
from meshproxy.tls.policy import HYBRID, PqPolicy

# Envoy's group names (tls/policy.py) in the TLS Supported Groups numbering aioquic uses.
GROUPS = {
    HYBRID: pqtls.X25519MLKEM768,
    "X25519": tls.Group.X25519,
    "X448": tls.Group.X448,
    "P-256": tls.Group.SECP256R1,
    "P-384": tls.Group.SECP384R1,
    "P-521": tls.Group.SECP521R1,
}
_GROUP_NAMES = {int(number): name for name, number in GROUPS.items()}


def aioquic_groups(policy: PqPolicy, field: str = "tls_params.ecdh_curves") -> list[int]:
    """The policy's groups, most preferred first, as aioquic's ``_supported_groups``."""
    unknown = [g for g in policy.groups if g not in GROUPS]
    if unknown:
        raise ConfigError([f"{field}: {', '.join(unknown)} not available over QUIC; use {', '.join(GROUPS)}"])
    return [GROUPS[g] for g in policy.groups]


def _peek(message: Buffer) -> Buffer:
    """A fresh reader over a whole handshake message (``Buffer.data`` stops at the read position)."""
    return Buffer(data=message.data_slice(0, message.capacity))


class AlertCertificateRequired(tls.Alert):
    description = tls.AlertDescription.certificate_required


class PqContext(tls.Context):
    """aioquic's ``tls.Context`` plus meshproxy's policy; made by `PqQuicConnection`, see `adopt`."""

    cfg: TlsConfig
    group: str
    peer_signature: str
    received_server_name: str

    def adopt(self, cfg: TlsConfig) -> None:
        """Apply ``cfg`` to a context aioquic has just built (before its first handshake message)."""
        self.cfg = cfg
        self.group = ""
        self.peer_signature = ""
        self.received_server_name = ""
        # aioquic types these as its Group enum, which has no 0x11EC (pqtls adds the group).
        self._supported_groups = aioquic_groups(cfg.pq_policy)  # type: ignore[assignment]
        # aioquic's own check is a DNS name against the SNI; ours (chain + SPIFFE) runs instead.
        self._verify_mode = tls.ssl.CERT_NONE
        self._request_client_certificate = cfg.server_side and cfg.trusted_ca is not None

    # ------------------------------------------------------------------ group

    def _client_handle_hello(self, input_buf: Buffer, output_buf: Buffer) -> None:
        hello = tls.pull_server_hello(_peek(input_buf))
        super()._client_handle_hello(input_buf, output_buf)
        self._settle_group(hello)

    def _server_handle_hello(self, input_buf: Buffer, initial_buf: Buffer, handshake_buf: Buffer) -> None:
        self.received_server_name = tls.pull_client_hello(_peek(input_buf)).server_name or ""
        start = initial_buf.tell()
        super()._server_handle_hello(input_buf, initial_buf, handshake_buf)
        self._settle_group(
            tls.pull_server_hello(Buffer(data=initial_buf.data_slice(start, initial_buf.tell())))
        )

    def _settle_group(self, hello: tls.ServerHello) -> None:
        assert hello.key_share is not None  # aioquic refused a ServerHello without one
        self.group = _GROUP_NAMES.get(hello.key_share[0], f"0x{hello.key_share[0]:04x}")
        verdict = self.cfg.pq_policy.verdict(self.group)
        if verdict is not None:
            raise tls.AlertHandshakeFailure(verdict)

    # ------------------------------------------------------------------ peer

    def _check_certificate_verify_signature(self, verify: tls.CertificateVerify) -> None:
        super()._check_certificate_verify_signature(verify)
        self.peer_signature = tls.SignatureAlgorithm(verify.algorithm).name.lower()

    def _client_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._client_handle_certificate_verify(input_buf)
        self._check_peer()

    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        if self.cfg.require_client_certificate and not tls.pull_certificate(_peek(input_buf)).certificates:
            raise AlertCertificateRequired("peer sent no certificate (require_client_certificate)")
        super()._server_handle_certificate(input_buf)

    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)
        self._check_peer()

    def _check_peer(self) -> None:
        cfg = self.cfg
        if cfg.trusted_ca is None:
            return
        leaf = self._peer_certificate
        assert leaf is not None  # aioquic stores it before CertificateVerify is accepted
        tls.verify_certificate(certificate=leaf, chain=self._peer_certificate_chain, cadata=cfg.trusted_ca)
        sans = subject_alt_names(leaf)
        if not cfg.identity_allowed(sans):
            raise tls.AlertBadCertificate(identity_refused(sans))

    # ------------------------------------------------------------------ evidence

    def negotiated(self) -> Negotiated:
        """The finished handshake, in the TCP engine's terms."""
        leaf = self._peer_certificate
        chain: tuple[x509.Certificate, ...] = () if leaf is None else (leaf, *self._peer_certificate_chain)
        assert self.key_schedule is not None
        return Negotiated(
            version="TLSv1.3",
            group=self.group,
            cipher=f"TLS_{self.key_schedule.cipher_suite.name}",
            peer_signature=self.peer_signature,
            alpn=self.alpn_negotiated,
            peer_chain=chain,
            peer_uris=uri_sans(leaf) if leaf is not None else (),
            server_name=(self._server_name or "") if self._is_client else self.received_server_name,
            resumed=False,
        )


class PqQuicConnection(QuicConnection):
    """aioquic's ``QuicConnection`` whose TLS context is a `PqContext` configured by ``tls_config``."""

    def __init__(self, *, tls_config: TlsConfig, max_streams: int = 128, **kwargs: object) -> None:
        """``max_streams``: request streams the peer may have open at once (aioquic fixes 128)."""
        self._tls_config = tls_config
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._local_max_streams_bidi = Limit(
            frame_type=QuicFrameType.MAX_STREAMS_BIDI, name="max_streams_bidi", value=max_streams
        )

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        # aioquic builds its tls.Context inline here and wires a dozen fields and callbacks into
        # it; changing the instance's class keeps all of that and adds our overrides (PqContext
        # adds no state aioquic's __init__ would have had to make).
        self.tls.__class__ = PqContext
        assert isinstance(self.tls, PqContext)
        self.tls.adopt(self._tls_config)

    @property
    def negotiated(self) -> Negotiated:
        assert isinstance(self.tls, PqContext)
        return self.tls.negotiated()
