"""The sans-I/O TLS engine: one connection's OpenSSL state over memory BIOs.

Owns a connection's handshake, record protection and shutdown, in the shape of aioquic's
``QuicConnection``: the owner feeds what arrived (``receive_data``, ``receive_eof``), asks for
what to send (``data_to_send``), and reads and writes application data (``read``, ``write``).
It also owns the checks made *during* the handshake, so that a refused peer receives a TLS
alert rather than a silent close: certificate chain errors and the SPIFFE identity of the peer
(``match_san_uris``) are decided in OpenSSL's verify callback; a classical-only peer under the
``required`` PQ policy is refused by OpenSSL itself (no group in common). After the handshake it
publishes a ``Negotiated`` record.

Once a connection is up, ``decrypt`` and ``encrypt`` are the data path: each is one call into
the record path (``records``: compiled, or its cffi twin), doing what ``receive_data`` + ``read``
+ ``data_to_send`` and ``write`` + ``data_to_send`` do in several.

Must not import asyncio or sockets (the transport in ``transport.py`` is the only I/O shell);
OpenSSL is reached through pyOpenSSL, ``_openssl``, ``_unexported`` and ``records``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from meshproxy.tls import _openssl, _unexported
from meshproxy.tls.config import PeerSans, SanType, TlsConfig
from meshproxy.tls.errors import (
    ALERT_REASON_OFFSET,
    CERTIFICATE_REASONS,
    TlsError,
    failed_locally,
    refused_by_peer,
)
from meshproxy.tls.policy import PqMode, canonical_group
from meshproxy.tls.records import Records


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What one handshake settled: for the access log, counters, routing and XFCC."""

    version: str  # "TLSv1.3"
    group: str  # Envoy's spelling: "X25519MLKEM768", "X25519", "P-256"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    peer_signature: str  # "ecdsa_secp256r1_sha256", "mldsa65"; "" on resumption (no signature)
    alpn: str | None
    peer_chain: tuple[x509.Certificate, ...]  # leaf first, as the peer sent it; () if none
    peer_uris: tuple[str, ...]  # the leaf's URI SANs (SPIFFE IDs)
    server_name: str  # SNI: sent (client) or received (server)
    resumed: bool

    def peer_leaf_der(self) -> bytes:
        """The peer's leaf certificate in DER (XFCC's ``Hash=``); there must be one."""
        return self.peer_chain[0].public_bytes(Encoding.DER)

    def peer_dns_names(self) -> list[str]:
        """The DNS SANs of the peer's leaf (RBAC's ``principal_name`` after the URI SANs)."""
        try:
            ext = self.peer_chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return ext.value.get_values_for_type(x509.DNSName)


def uri_sans(cert: x509.Certificate) -> tuple[str, ...]:
    return subject_alt_names(cert)["URI"]


def subject_alt_names(cert: x509.Certificate) -> dict[SanType, tuple[str, ...]]:
    """The certificate's SANs of the types ``match_typed_subject_alt_names`` can name (IP
    addresses in their canonical text form, as Envoy compares them)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {"URI": (), "DNS": (), "EMAIL": (), "IP_ADDRESS": ()}
    return {
        "URI": tuple(sans.get_values_for_type(x509.UniformResourceIdentifier)),
        "DNS": tuple(sans.get_values_for_type(x509.DNSName)),
        "EMAIL": tuple(sans.get_values_for_type(x509.RFC822Name)),
        "IP_ADDRESS": tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)),
    }


def _identity_refused(sans: PeerSans) -> str:
    names = sans.get("URI") or sans.get("DNS") or ()
    return f"peer identity {', '.join(names) or '(no URI SAN)'} not allowed"


class TlsEngine:
    """One TLS connection, client or server as ``cfg.server_side`` says."""

    __slots__ = (
        "__weakref__",
        "_cfg",
        "_conn",
        "_failed",
        "_leaf",
        "_on_session",
        "_records",
        "_refusal",
        "_sent_close",
        "_ssl",
        "_tickets_due",
        "_uris",
        "handshake_complete",
        "negotiated",
        "peer_closed",
    )

    def __init__(
        self,
        cfg: TlsConfig,
        context: SSL.Context,
        *,
        server_hostname: str = "",
        session: bytes = b"",
        on_session: Callable[[bytes], None] | None = None,
    ) -> None:
        """``context`` is ``build_context(cfg)``. Client: ``session`` (as ``session()`` returned
        it) is offered for resumption; ``on_session`` receives the resumable session once the
        server's ticket has arrived."""
        conn = SSL.Connection(context, None)
        self._cfg = cfg
        self._conn = conn
        # pyOpenSSL's own SSL object (handshake, sessions, what was negotiated), and the record
        # path over it and its memory BIOs (every byte in and out goes through ``_records``).
        self._ssl = conn._ssl
        self._records = Records(conn)
        self._failed: TlsError | None = None
        self._refusal: tuple[str, str] | None = None  # (code, reason) of a verify-callback refusal
        self._leaf: x509.Certificate | None = None
        self._uris: tuple[str, ...] = ()
        self._sent_close = False
        self._tickets_due = False
        self._on_session = None if cfg.server_side else on_session
        self.handshake_complete = False
        self.negotiated: Negotiated | None = None
        self.peer_closed = False
        _openssl.watch(self._ssl, self)
        if cfg.server_side:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
            if server_hostname or cfg.sni:
                conn.set_tlsext_host_name((server_hostname or cfg.sni).encode("idna"))
            if session:
                _openssl.set_session_der(self._ssl, session)

    # ------------------------------------------------------------------ input

    def start_handshake(self) -> None:
        """Client: put the ClientHello into ``data_to_send``. Server: nothing to do until data."""
        if not self._cfg.server_side:
            self._handshake()

    def receive_data(self, data: bytes) -> None:
        """Ciphertext from the peer; advances the handshake. Raises TlsError if it fails."""
        if self._failed is not None:
            raise self._failed
        self._records.feed(data)
        if not self.handshake_complete:
            self._handshake()
        elif self._on_session is not None:
            self._tickets_due = True

    def receive_eof(self) -> None:
        """The peer's transport closed; what is buffered can still be read, then ``peer_closed``."""
        if self._records is None:  # released
            return
        self._records.set_eof()
        if self.handshake_complete or self._failed is not None:
            return
        reason = "peer closed the connection during the TLS handshake"
        policy = self._cfg.pq_policy
        if not self._cfg.server_side and _openssl.before_server_hello(self._ssl):
            reason = "peer closed the connection without answering our ClientHello"
            if policy.mode is PqMode.REQUIRED:
                # What a classical-only peer that sends no alert does (asyncio's ssl, for one).
                reason += f" (we offered only {policy.openssl_groups}: is the peer classical-only?)"
        raise self._fail(TlsError(reason, code="closed_during_handshake"))

    def read(self) -> bytes:
        """All application data available now ("" if none). Raises TlsError on a fatal alert."""
        if self._failed is not None or not self.handshake_complete:
            return b""
        return self._received(*self._records.read())

    def decrypt(self, data: bytes) -> tuple[bytes, bytes | bytearray]:
        """``receive_data(data)``, ``read()`` and ``data_to_send()``: the plaintext, and what to
        send first (what reading made OpenSSL answer, mostly nothing); once the handshake is
        complete, in one call."""
        if self._failed is not None:
            raise self._failed
        if not self.handshake_complete:
            self.receive_data(data)
            return self.read(), self.data_to_send()
        if self._on_session is not None:
            self._tickets_due = True
        plaintext, status, out = self._records.receive(data)
        return self._received(plaintext, status), out

    def _received(self, data: bytes, status: int) -> bytes:
        if status == _openssl.CLOSED or status == _openssl.EOF:
            self.peer_closed = True
        elif status == _openssl.FAILED:
            raise self._fail(self._classify(_openssl.errors()))
        if self._tickets_due:
            # A TLS 1.3 server sends its tickets as soon as it has our Finished: the first
            # records after our handshake carry them, so the session is resumable now.
            self._tickets_due = False
            report, self._on_session = self._on_session, None
            session = _openssl.session_der(self._ssl)
            if session and report is not None:
                report(session)
        return data

    # ------------------------------------------------------------------ output

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` (whole records; never a partial write)."""
        if not data:
            return
        if self._failed is not None or self._sent_close or not self.handshake_complete:
            raise TlsError("connection is not open for writing", code="not_open")
        if self._records.write(data) != _openssl.OK:
            raise self._fail(self._classify(_openssl.errors()))

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """``write(data)`` then ``data_to_send()``, in one call."""
        if not data or self._failed is not None or self._sent_close or not self.handshake_complete:
            self.write(data)  # raises unless there is nothing to write
            return self.data_to_send()
        status, out = self._records.encrypt(data)
        if status != _openssl.OK:
            raise self._fail(self._classify(_openssl.errors()))
        return out

    def data_to_send(self) -> bytes | bytearray:
        """Everything to put on the wire now, in one buffer the caller owns ("" if nothing)."""
        if self._records is None:  # released
            return b""
        return self._records.drain()

    def release(self) -> None:
        """Free this connection's OpenSSL state (the SSL object and its BIOs, tens of KiB
        outside Python's heap) now, not whenever the cyclic collector gets to it: the owner
        calls it once the socket is gone. Afterwards the engine only answers as failed."""
        if self._failed is None:
            self._failed = TlsError("the connection is closed", code="not_open")
        # Every later use of these is behind a ``_failed`` or None check.
        self._conn = self._records = None  # type: ignore[assignment]  # released; see the comment above
        self._ssl = None

    def close(self) -> None:
        """Queue close_notify; no more writes. Reading goes on until the peer's own close."""
        if not self._sent_close and self._failed is None:
            self._sent_close = True
            _openssl.shutdown(self._ssl)

    def key_update(self) -> None:
        """Send a TLS 1.3 KeyUpdate now, asking the peer to update its keys too (RFC 8446 §4.6.3)."""
        if not self.handshake_complete or self._failed is not None or self._sent_close:
            raise TlsError("key update needs an open TLS 1.3 connection", code="not_open")
        if self._conn.get_protocol_version_name() != "TLSv1.3" or not _unexported.key_update(self._ssl):
            raise TlsError(
                "key update is not available (TLS 1.2, or an OpenSSL build without SSL_key_update)",
                code="not_open",
            )
        _openssl.handshake(self._ssl)  # writes the KeyUpdate message into the outgoing BIO

    def session(self) -> bytes:
        """The current session, serialized; resumable once the server's ticket has been read."""
        return _openssl.session_der(self._ssl)

    # ------------------------------------------------------------------ handshake

    def _handshake(self) -> None:
        status = _openssl.handshake(self._ssl)
        if status == _openssl.OK:
            self._complete()
        elif status != _openssl.WANT_READ:
            raise self._fail(self._classify(_openssl.errors()))

    def check_certificate(self, ok: bool, error: int, depth: int, der: bytes) -> bool:
        """The verify callback (via ``_openssl``): chain errors, then the leaf's identity."""
        if not ok:
            self._refusal = CERTIFICATE_REASONS.get(
                error, ("bad_certificate", f"certificate verification failed (X509 error {error})")
            )
            return False
        if depth:
            return True
        self._leaf = leaf = x509.load_der_x509_certificate(der)
        sans = subject_alt_names(leaf)
        self._uris = sans["URI"]
        if not self._cfg.identity_allowed(sans):
            self._refusal = ("identity_not_allowed", _identity_refused(sans))
            return False
        return True

    def _complete(self) -> None:
        conn = self._conn
        ssl = self._ssl
        group = canonical_group(_openssl.group_name(ssl))
        verdict = self._cfg.pq_policy.verdict(group)
        refusal = None if verdict is None else TlsError(verdict, code="no_pq_group")
        leaf, uris = self._leaf, self._uris
        if leaf is None:  # resumed (the callback did not run), or an unverified/absent peer cert
            leaf = conn.get_peer_certificate(as_cryptography=True)
            sans = subject_alt_names(leaf) if leaf is not None else {}
            uris = sans.get("URI", ())
            if refusal is None and self._cfg.trusted_ca is not None and not self._cfg.identity_allowed(sans):
                refusal = TlsError(_identity_refused(sans), code="identity_not_allowed")
        if refusal is not None:
            self.close()  # the handshake is over: all we can still send is close_notify
            raise self._fail(refusal)
        sent = conn.get_peer_cert_chain(as_cryptography=True) or []
        chain = tuple(sent) if not self._cfg.server_side or leaf is None else (leaf, *sent)
        sni = conn.get_servername()
        alpn = conn.get_alpn_proto_negotiated()
        self.negotiated = Negotiated(
            version=conn.get_protocol_version_name(),
            group=group,
            cipher=conn.get_cipher_name() or "",
            peer_signature=_unexported.peer_signature_name(ssl),
            alpn=alpn.decode() if alpn else None,
            peer_chain=chain,
            peer_uris=uris,
            server_name=sni.decode() if sni else "",
            resumed=_openssl.session_reused(ssl),
        )
        self.handshake_complete = True

    # ------------------------------------------------------------------ failures

    def _classify(self, codes: list[tuple[int, str]]) -> TlsError:
        policy = self._cfg.pq_policy
        required = policy.mode is PqMode.REQUIRED
        for code, _text in codes:
            if code > ALERT_REASON_OFFSET:
                return refused_by_peer(
                    code - ALERT_REASON_OFFSET,
                    pq_groups=policy.openssl_groups,
                    pq_required=required,
                    before_server_hello=_openssl.before_server_hello(self._ssl),
                )
        if self._refusal is not None:
            return TlsError(self._refusal[1], code=self._refusal[0])
        code, text = codes[-1] if codes else (0, "")
        return failed_locally(code, text, pq_groups=policy.openssl_groups, pq_required=required)

    def _fail(self, exc: TlsError) -> TlsError:
        self._failed = exc
        return exc
