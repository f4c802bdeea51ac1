"""Why a TLS connection failed, in words an operator can act on.

Owns ``TlsError`` and the translation of OpenSSL's failure codes and of TLS alerts (RFC 8446
§6) into reasons: "expired certificate", "peer offered no post-quantum group", "peer rejected
our certificate (unknown_ca)". Knows nothing of sockets or of how the engine drives OpenSSL; it
is handed reason codes and the connection's role and policy.
"""

from __future__ import annotations

from meshproxy.errors import MeshproxyError

# RFC 8446 §6 (and RFC 8446 §4.4.2.4 for certificate_required) alert descriptions.
ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
    120: "no_application_protocol",
}

# OpenSSL puts a received alert on its error queue as reason 1000 + the alert number.
ALERT_REASON_OFFSET = 1000

# X509_V_ERR_* (x509_vfy.h) to (code, reason) on the refusing side.
_UNKNOWN_CA = ("unknown_ca", "certificate signed by an unknown CA")
CERTIFICATE_REASONS = {
    2: _UNKNOWN_CA,  # UNABLE_TO_GET_ISSUER_CERT
    7: ("bad_certificate", "certificate signature invalid"),  # CERT_SIGNATURE_FAILURE
    9: ("certificate_not_yet_valid", "certificate not yet valid"),  # CERT_NOT_YET_VALID
    10: ("certificate_expired", "expired certificate"),  # CERT_HAS_EXPIRED
    18: _UNKNOWN_CA,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: _UNKNOWN_CA,  # SELF_SIGNED_CERT_IN_CHAIN
    20: _UNKNOWN_CA,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: _UNKNOWN_CA,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    24: ("bad_certificate", "issuer is not a CA"),  # INVALID_CA
    26: ("bad_certificate", "certificate not usable for this purpose"),  # INVALID_PURPOSE
    27: _UNKNOWN_CA,  # CERT_UNTRUSTED
}

# SSL_R_* reason codes (sslerr.h) for failures this side detected, to (code, reason).
_NO_SUITABLE_KEY_SHARE = 101
_NO_SHARED_GROUPS = 410
_LOCAL_REASONS = {
    155: ("plaintext", "peer sent plaintext (an HTTP proxy request), not TLS"),  # HTTPS_PROXY_REQUEST
    156: ("plaintext", "peer sent plaintext (an HTTP request), not TLS"),  # HTTP_REQUEST
    193: ("no_shared_cipher", "no cipher suite in common with the peer"),  # NO_SHARED_CIPHER
    199: ("no_client_certificate", "no client certificate"),  # PEER_DID_NOT_RETURN_A_CERTIFICATE
    258: ("no_shared_version", "no TLS version in common with the peer"),  # UNSUPPORTED_PROTOCOL
    267: ("not_tls", "peer did not speak TLS (wrong record version)"),  # WRONG_VERSION_NUMBER
    198: ("not_tls", "peer did not speak TLS (record too long)"),  # PACKET_LENGTH_TOO_LONG
}


class TlsError(MeshproxyError):
    """A TLS handshake or connection failed.

    ``reason`` is the sentence for the log (it may name the peer's identity or an OpenSSL
    message); ``code`` is a short word from a fixed set, for counters: ``unknown_ca``,
    ``certificate_expired``, ``certificate_not_yet_valid``, ``bad_certificate``,
    ``identity_not_allowed``, ``no_client_certificate``, ``no_pq_group``, ``no_shared_group``,
    ``no_shared_cipher``, ``no_shared_version``, ``plaintext``, ``not_tls``,
    ``handshake_timeout``, ``closed_during_handshake``, ``connection_lost``, ``tls_error``,
    ``not_open``, or ``peer_<alert>`` when the peer refused (then ``by_peer`` is set and ``alert``
    names its alert, RFC 8446 §6).
    """

    def __init__(self, reason: str, *, code: str, alert: str = "", by_peer: bool = False) -> None:
        self.reason = reason
        self.code = code
        self.alert = alert
        self.by_peer = by_peer
        super().__init__(reason)


def refused_by_peer(alert: int, *, pq_groups: str, pq_required: bool, before_server_hello: bool) -> TlsError:
    """The peer sent a fatal alert; say what it most likely objected to."""
    name = ALERTS.get(alert, f"alert_{alert}")
    code = f"peer_{name}"
    if alert == 40 and pq_required and before_server_hello:
        code = "no_pq_group"
        reason = (
            f"peer accepts no post-quantum group: it refused our only groups {pq_groups} (handshake_failure)"
        )
    elif alert in (42, 43, 44, 45, 46, 48, 49):
        reason = f"peer rejected our certificate ({name})"
    elif alert == 116:
        reason = "peer requires a client certificate and we have none (certificate_required)"
    elif alert == 70:
        reason = "no TLS version in common with the peer (protocol_version)"
    else:
        reason = f"peer refused the connection ({name})"
    return TlsError(reason, code=code, alert=name, by_peer=True)


def failed_locally(code: int, text: str, *, pq_groups: str, pq_required: bool) -> TlsError:
    """This side refused or failed: ``code`` is OpenSSL's reason code, ``text`` its string."""
    if code in (_NO_SUITABLE_KEY_SHARE, _NO_SHARED_GROUPS):
        if pq_required:
            return TlsError(
                f"peer offered no post-quantum group (policy requires {pq_groups})", code="no_pq_group"
            )
        return TlsError(
            f"no key exchange group in common with the peer (we accept {pq_groups})", code="no_shared_group"
        )
    short, reason = _LOCAL_REASONS.get(code, ("tls_error", f"TLS failed: {text or 'unknown error'}"))
    return TlsError(reason, code=short)
