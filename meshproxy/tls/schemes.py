"""TLS 1.3 SignatureScheme names (RFC 8446 §4.2.3), as a handshake reports the peer's.

Owns the one table from OpenSSL's (signature type, digest) short names to the scheme names
meshproxy shows (access log, stats, admin) and authorizes on (RBAC's TlsPrincipal). Depends on
nothing: ``_unexported.py`` reads it after asking OpenSSL, the RBAC compiler to check names.
"""

from __future__ import annotations

SCHEMES = {
    ("id-ecPublicKey", "SHA256"): "ecdsa_secp256r1_sha256",
    ("id-ecPublicKey", "SHA384"): "ecdsa_secp384r1_sha384",
    ("id-ecPublicKey", "SHA512"): "ecdsa_secp521r1_sha512",
    ("RSASSA-PSS", "SHA256"): "rsa_pss_rsae_sha256",
    ("RSASSA-PSS", "SHA384"): "rsa_pss_rsae_sha384",
    ("RSASSA-PSS", "SHA512"): "rsa_pss_rsae_sha512",
    ("rsaEncryption", "SHA256"): "rsa_pkcs1_sha256",
    ("ED25519", ""): "ed25519",
    ("ED448", ""): "ed448",
    ("id-ml-dsa-44", ""): "mldsa44",
    ("id-ml-dsa-65", ""): "mldsa65",
    ("id-ml-dsa-87", ""): "mldsa87",
}

SIGNATURE_SCHEMES = frozenset(SCHEMES.values())
