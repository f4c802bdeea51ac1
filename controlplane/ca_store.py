"""The CA's state directory: load the CA at start, or create it at the first start.

Owns the files and their modes: ``ca.key`` (PKCS#8 PEM, mode 0600, in a 0700 directory) and
``ca.crt``. The key is written before the certificate and each file appears by an atomic rename,
so a directory with ``ca.crt`` always has its key; a ``ca.key`` alone is the trace of an
interrupted first start and is refused with what to do (nothing is overwritten, ever). A loaded
CA must be for the configured trust domain, hold the key of its certificate and not be expired.

Must not depend on: grpc, asyncio. The clock is the parameter ``now``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity import certs
from meshproxy.identity.spiffe import describe_certificate

log = logging.getLogger(__name__)

KEY_FILE = "ca.key"
CERT_FILE = "ca.crt"


def load_or_create(
    ca_dir: Path,
    *,
    trust_domain: str,
    now: datetime,
    algorithm: certs.Algorithm = certs.Algorithm.ECDSA_P256,
) -> certs.CertificateAuthority:
    """The CA in ``ca_dir``; a new one (``algorithm``, for ``trust_domain``) when it has none."""
    key_path, cert_path = ca_dir / KEY_FILE, ca_dir / CERT_FILE
    if cert_path.exists():
        return _load(key_path, cert_path, trust_domain=trust_domain, now=now)
    if key_path.exists():
        raise ConfigError(
            [
                f"{key_path}: a CA key without {CERT_FILE} (an interrupted first start?); "
                "remove it to create a new CA, or restore the certificate beside it"
            ]
        )
    try:
        ca = certs.generate_ca(trust_domain, now=now, alg=algorithm)
    except IdentityError as exc:
        raise ConfigError([f"--trust-domain: {exc}"]) from None
    try:
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(key_path, certs.key_to_pem(ca.key), mode=0o600)
        _write_new(cert_path, certs.certs_to_pem([ca.cert]), mode=0o644)
    except OSError as exc:
        raise ConfigError([f"{ca_dir}: cannot create the CA state directory ({exc})"]) from None
    log.info(
        "created a %s CA for trust domain %r in %s, valid until %s",
        algorithm.value,
        trust_domain,
        ca_dir,
        ca.cert.not_valid_after_utc.isoformat(),
    )
    return ca


def _load(key_path: Path, cert_path: Path, *, trust_domain: str, now: datetime) -> certs.CertificateAuthority:
    try:
        ca = certs.load_ca(cert_path.read_bytes(), key_path.read_bytes())
    except OSError as exc:
        raise ConfigError([f"{cert_path.parent}: cannot read the CA ({exc})"]) from None
    except IdentityError as exc:
        raise ConfigError([f"{cert_path}: {exc}"]) from None
    what = f"{cert_path}: {describe_certificate(ca.cert)}"
    problems = []
    if ca.trust_domain != trust_domain:
        problems.append(
            f"{what} is the CA of trust domain {ca.trust_domain!r}, not {trust_domain!r}; "
            "pass --trust-domain to match it or use another --ca-dir"
        )
    if ca.cert.not_valid_after_utc <= now:
        problems.append(
            f"{what} expired at {ca.cert.not_valid_after_utc.isoformat()}; move the directory away to "
            "create a new CA (every proxy then needs the new trust bundle)"
        )
    if problems:
        raise ConfigError(problems)
    log.info(
        "loaded the %s CA of trust domain %r from %s", ca.algorithm.value, trust_domain, cert_path.parent
    )
    return ca


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a temporary file with ``mode``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash may have another mode: never reuse it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
