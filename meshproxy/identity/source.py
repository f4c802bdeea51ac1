"""Certificate material from files on disk, reloaded when the files change.

Owns the proxy's current SVID chain, private key and trust bundle when they come from files
(Envoy's ``tls_certificates`` / ``validation_context.trusted_ca`` filenames, or what cert-manager,
SPIRE's helper or a Kubernetes secret volume mount), and telling subscribers when they change.

How it watches: those writers never rewrite a file in place; they write a new directory and swap
a symlink to it atomically (Kubernetes' ``..data`` link). So a change shows as a new inode (or
size, mtime, ctime) of the file the path resolves to: `poll` stats the three paths, following
links, at most once per ``interval`` of the ``now`` it is given (the server's housekeeping tick
passes its loop time). Cost: three ``stat`` calls per interval; files are read only on a change.
No inotify: it misses nothing a poll sees, needs no dependency, and works on every filesystem;
a one-second poll is far inside the half-life renewal of even a 30 s SVID.

`CertSources` is what the proxy holds (DESIGN decision 10, certificates follow the
configuration): one `FileCertSource` per set of paths, shared by every TLS context built from
those files and kept only while one follows it. Each follower is an owner's key (a listener's
filter chain, a cluster runtime); the server re-declares the whole set after every
configuration change (`CertSources.follow_only`), so a listener or cluster an xDS update removed
or replaced stops following and a source nobody follows stops being polled.

A change is loaded and checked before it is used: the chain, key and bundle parse; the key is the
leaf's key (catches a writer that swapped one file and not the other); each certificate is signed
by the next and the last by a bundle certificate (catches a bundle from another CA; checked
without the clock: an expired certificate still loads rather than leaving an even older one in
place, and peers refuse it as they would); the leaf carries one SPIFFE ID. If any of that fails, the old
material stays, the reason is logged once per distinct bad version of the files, and
`last_error` holds it.

Must not depend on: asyncio (the caller owns the tick), the TLS engine (subscribers rebuild
their contexts from `CertMaterial`).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from meshproxy.errors import IdentityError

if TYPE_CHECKING:
    from cryptography import x509

    from meshproxy.identity.certs import PrivateKey
    from meshproxy.identity.spiffe import SpiffeId

Paths = tuple[str, str, str]  # certificate chain, private key, trust bundle
Rotate = Callable[["CertMaterial"], None]
Pem = tuple[bytes, bytes, bytes | None]  # what a TLS context holds: chain, key, trusted CA
log = logging.getLogger("meshproxy.identity")

_FileVersion = tuple[int, int, int, int, int] | None


@dataclass(frozen=True, slots=True)
class CertMaterial:
    """One consistent set: leaf-first chain, its key, the trust bundle, and their PEM.

    The PEM is kept because the TLS engine loads from it: pyOpenSSL's
    ``PKey.from_cryptography_key`` refuses ML-DSA keys, ``load_privatekey(FILETYPE_PEM, …)``
    takes them.
    """

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey
    bundle: tuple[x509.Certificate, ...]
    spiffe_id: SpiffeId
    chain_pem: bytes
    key_pem: bytes
    bundle_pem: bytes

    @property
    def not_after(self) -> datetime:
        return self.chain[0].not_valid_after_utc

    @property
    def pem(self) -> tuple[bytes, bytes, bytes]:
        return self.chain_pem, self.key_pem, self.bundle_pem


def load_material(
    chain_pem: bytes, key_pem: bytes, bundle_pem: bytes, origins: tuple[str, str, str] = ("", "", "")
) -> CertMaterial:
    """Parse and cross-check one set (module docstring); `IdentityError` says what is wrong.

    ``origins`` (file names) go into the messages about each part.
    """
    # cryptography loads with the first certificate files, not with every proxy (docs/memory.md).
    from meshproxy.identity.certs import key_matches, load_bundle, load_certs_pem, load_key_pem
    from meshproxy.identity.spiffe import SpiffeId, describe_certificate

    chain_from, key_from, bundle_from = (f" {origin}" if origin else "" for origin in origins)
    chain = tuple(load_certs_pem(chain_pem, f"certificate chain{chain_from}"))
    key = load_key_pem(key_pem, f"private key{key_from}")
    bundle = load_bundle(bundle_pem, f"trust bundle{bundle_from}")
    leaf = chain[0]
    if not key_matches(leaf, key):
        raise IdentityError(f"{describe_certificate(leaf)}: the private key is not this certificate's key")
    for cert, issuer in itertools.pairwise(chain):
        if not _issued_by(cert, issuer):
            raise IdentityError(
                f"certificate chain: {describe_certificate(cert)} is not signed by the next certificate, "
                f"{describe_certificate(issuer)}"
            )
    last = chain[-1]
    if last not in bundle and not any(_issued_by(last, ca) for ca in bundle):
        raise IdentityError(
            f"{describe_certificate(last)}: not signed by any of the {len(bundle)} trust bundle "
            "certificates (a bundle from another CA?)"
        )
    return CertMaterial(chain, key, bundle, SpiffeId.from_certificate(leaf), chain_pem, key_pem, bundle_pem)


class FileCertSource:
    """The current `CertMaterial` from three files, reloaded by `poll` when they change."""

    def __init__(self, chain_path: str, key_path: str, bundle_path: str, *, interval: float = 1.0) -> None:
        self.paths: Paths = (chain_path, key_path, bundle_path)
        self.interval = interval
        self.last_error: str | None = None
        self._next_check: float | None = None
        self._subscribers: list[Rotate] = []
        self._version = self._stat()
        self._current = self._load()  # no older material to fall back on: an error propagates

    @property
    def current(self) -> CertMaterial:
        return self._current

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, callback: Rotate) -> Callable[[], None]:
        """Call ``callback(new)`` after each successful reload; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def poll(self, now: float) -> bool:
        """`check` if at least ``interval`` has passed since the last look; whether it reloaded."""
        if self._next_check is not None and now < self._next_check:
            return False
        self._next_check = now + self.interval
        return self.check()

    def check(self) -> bool:
        """Reload now if the files changed; returns whether new material was installed."""
        version = self._stat()
        if version == self._version:
            return False
        self._version = version  # a bad version is reported once, not on every poll
        try:
            material = self._load()
        except (IdentityError, OSError) as exc:
            self.last_error = str(exc)
            log.warning(
                "certificate files %s changed but were not loaded, keeping %s (expires %s): %s",
                ", ".join(self.paths),
                self._current.spiffe_id,
                self._current.not_after.isoformat(),
                exc,
            )
            return False
        self.last_error = None
        self._current = material
        log.info("loaded certificate for %s, expires %s", material.spiffe_id, material.not_after.isoformat())
        for callback in list(self._subscribers):
            try:
                callback(material)
            except Exception:
                log.exception("certificate subscriber %r failed", callback)
        return True

    def _stat(self) -> tuple[_FileVersion, ...]:
        return tuple(_file_version(path) for path in self.paths)

    def _load(self) -> CertMaterial:
        chain, key, bundle = (_read(path) for path in self.paths)
        return load_material(chain, key, bundle, origins=self.paths)


class CertSources:
    """The `FileCertSource`s in use, one per set of paths, each kept while someone follows it."""

    def __init__(self, *, interval: float = 1.0) -> None:
        self.interval = interval
        self.sources: dict[Paths, FileCertSource] = {}
        self._followers: dict[Hashable, tuple[FileCertSource, Callable[[], None]]] = {}

    def __len__(self) -> int:
        return len(self._followers)

    def follow_only(self, wanted: Mapping[Hashable, tuple[Paths, Pem, Rotate]]) -> None:
        """Make ``wanted`` the followers: ``key -> (paths, installed PEM, rotate)``.

        A key not followed yet subscribes ``rotate`` to its paths' source (created and loaded if
        new, checked for a change if shared) and gets ``rotate(current)`` at once when its
        ``installed`` chain, key and bundle are not the source's current ones: an xDS update
        compiled before the files last changed must not serve the older set until the next
        change. A followed key not in ``wanted`` unsubscribes; a source left without followers
        is dropped. Files that do not load as one consistent set (`load_material`) are logged
        and not followed (the owner keeps the material it was built with); the next call tries
        again.
        """
        for key in [k for k in self._followers if k not in wanted]:
            left, unsubscribe = self._followers.pop(key)
            unsubscribe()
            if not left.subscribers:
                del self.sources[left.paths]
        for key, (paths, installed, rotate) in wanted.items():
            if key in self._followers:
                continue
            source = self._source(paths)
            if source is None:
                continue
            self._followers[key] = (source, source.subscribe(rotate))
            if source.current.pem != installed:
                rotate(source.current)

    def _source(self, paths: Paths) -> FileCertSource | None:
        """The shared source of ``paths``, checked for a change; a new one, loaded; or None."""
        source = self.sources.get(paths)
        if source is not None:
            source.check()
            return source
        try:
            source = self.sources[paths] = FileCertSource(*paths, interval=self.interval)
        except (IdentityError, OSError) as exc:
            log.error("certificate files %s are not followed for rotation: %s", ", ".join(paths), exc)
            return None
        return source

    def poll(self, now: float) -> None:
        for source in self.sources.values():
            source.poll(now)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _file_version(path: str) -> _FileVersion:
    try:
        st = os.stat(path)  # follows the symlink: a swapped link shows as another inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature  # loaded by load_material's caller already

    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
