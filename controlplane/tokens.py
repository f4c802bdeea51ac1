"""Bootstrap tokens: which caller may obtain which SPIFFE identity from the CA.

Owns the tokens file format, its parsing (every problem reported as ``file:line: message``), the
lookup of a presented token, the grant check, and appending a freshly created token.

Format, one grant per line, ``#`` starting a comment::

    <token> spiffe://mesh.local/ns/default/sa/web     # exactly this identity
    <token> spiffe://mesh.local/ns/default/sa/        # any identity below this prefix

A grant ending in ``/`` is a prefix of whole path segments: ``.../ns/default/sa/`` admits
``.../ns/default/sa/web`` but neither ``.../ns/default/sa`` itself nor ``.../ns/default/sab``
(the SPIFFE rules already forbid ``.`` and ``..`` segments, so a prefix cannot be escaped).
Tokens are held in memory only as SHA-256 digests: the lookup is a dictionary probe on a digest,
which leaks nothing usable about a token through timing. `TokensFile` re-reads the file when it
changes, so ``controlplane token create`` takes effect on a running server; a later edit that
does not parse is logged and the last good table stays in force.

`Authenticator` is what the CA asks who a caller is: `TokensFile` answers from the tokens file,
`controlplane.k8s.tokenreview` from the Kubernetes API (a pod's service-account token).

Must not depend on: grpc, asyncio. `TokensFile` and `append_token` are the only file I/O here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from controlplane.errors import Unauthenticated
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.spiffe import PrefixMatch, SpiffeId

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Grant:
    """The identity a token may obtain: one SPIFFE ID, or every ID below ``id`` when ``prefix``."""

    id: SpiffeId
    prefix: bool = False
    # Who granted it, for the refusal's message ("the bootstrap token grants ... only").
    credential: str = field(default="the bootstrap token", compare=False)

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``spiffe://td/path`` (exact) or ``spiffe://td/path/`` (prefix); `IdentityError` if invalid."""
        prefix = text.endswith("/")
        spiffe_id = SpiffeId.parse(text[:-1] if prefix else text)
        if not prefix and not spiffe_id.path:
            raise IdentityError(
                f"{text!r} is a trust domain, not a workload identity: end it with '/' to grant every "
                "identity in the trust domain"
            )
        return cls(spiffe_id, prefix)

    def allows(self, spiffe_id: SpiffeId) -> bool:
        if not self.prefix:
            return spiffe_id == self.id
        return spiffe_id != self.id and PrefixMatch(self.id).matches(spiffe_id)

    def __str__(self) -> str:
        return f"{self.id}/" if self.prefix else str(self.id)


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Token digests to grants: what one version of the tokens file says."""

    grants: Mapping[bytes, Grant]

    @classmethod
    def parse(cls, text: str, *, source: str, trust_domain: str) -> TokenTable:
        """The table of ``text``, or `ConfigError` listing every bad line of ``source``."""
        grants: dict[bytes, Grant] = {}
        first_line: dict[bytes, int] = {}
        problems = []
        for number, raw in enumerate(text.splitlines(), 1):
            fields = raw.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{source}:{number}"
            if len(fields) != 2:
                problems.append(
                    f"{where}: expected '<token> <spiffe-id or prefix/>', found {len(fields)} field(s)"
                )
                continue
            token, identity = fields
            if len(token) < MIN_TOKEN_LENGTH:
                problems.append(
                    f"{where}: token is {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}; "
                    "create one with 'controlplane token create'"
                )
                continue
            try:
                grant = Grant.parse(identity)
            except IdentityError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if grant.id.trust_domain != trust_domain:
                problems.append(
                    f"{where}: {grant} is in trust domain {grant.id.trust_domain!r}; "
                    f"this CA issues for {trust_domain!r}"
                )
                continue
            digest = _digest(token)
            if digest in grants:
                problems.append(f"{where}: token repeated (first on line {first_line[digest]})")
                continue
            grants[digest] = grant
            first_line[digest] = number
        if problems:
            raise ConfigError(problems)
        return cls(grants)

    def lookup(self, token: str) -> Grant | None:
        return self.grants.get(_digest(token))


class Authenticator(Protocol):
    """Who the caller of the CA is: the `Grant` of the credential in its ``authorization``
    metadata, or `SignRefused` (`Unauthenticated` when the credential is missing or unknown)."""

    async def authenticate(self, authorization: str | None) -> Grant: ...


def bearer_token(authorization: str | None) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata value."""
    if not authorization:
        raise Unauthenticated("no bootstrap token: send gRPC metadata 'authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    return token


def authenticate(authorization: str | None, tokens: TokenTable) -> Grant:
    """The grant of the bootstrap token in an ``authorization`` metadata value."""
    grant = tokens.lookup(bearer_token(authorization))
    if grant is None:
        raise Unauthenticated(
            "bootstrap token not recognised: create one with 'controlplane token create' "
            "and check the proxy's token file"
        )
    return grant


class TokensFile:
    """The tokens file of a running CA, re-read when its size, mtime or inode changes; the
    file's `Authenticator`."""

    def __init__(self, path: Path, *, trust_domain: str) -> None:
        self.path = path
        self.trust_domain = trust_domain
        self._stamp = self._stat()
        self._table = self._read()

    async def authenticate(self, authorization: str | None) -> Grant:
        return authenticate(authorization, self.table())

    def table(self) -> TokenTable:
        """The current table; a file that no longer parses leaves the last good one in force."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._table = self._read()
                log.info("tokens file %s reloaded: %d token(s)", self.path, len(self._table.grants))
            except ConfigError as exc:
                log.error(
                    "tokens file %s changed but is invalid; keeping the previous tokens:\n%s", self.path, exc
                )
        return self._table

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> TokenTable:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{self.path}: cannot read the tokens file ({exc})"]) from None
        return TokenTable.parse(text, source=str(self.path), trust_domain=self.trust_domain)


def new_token() -> str:
    """256 random bits, URL-safe base64 (43 characters): safe in a header, a file, a shell."""
    return secrets.token_urlsafe(32)


def append_token(path: Path, token: str, grant: Grant) -> None:
    """Add ``token`` for ``grant`` to the file, creating it with mode 0600 when missing."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            needs_newline = f.read(1) != b"\n"
        else:
            needs_newline = False
        f.write((b"\n" if needs_newline else b"") + f"{token} {grant}\n".encode())


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
