"""The proxy's side of the CA: obtain an X.509-SVID over gRPC, and keep it fresh.

Owns two things:

- `SvidClient.fetch`: a new key and a CSR for the proxy's SPIFFE ID on every call (built by
  `meshproxy.identity.certs`; the key never leaves this process), the bootstrap token read from
  its file on every call (a projected Kubernetes token rotates under us), the ``Sign`` call on a
  channel opened for that call (renewals are hours apart; a fresh channel carries no reconnect
  backoff over from an outage): over TLS when a ``trust_file`` is given (the CA's bundle, read on
  every call like the token; the CA's certificate must verify against it and name the host of
  ``target``), plaintext otherwise (the loopback port 15010); and a check of the answer as
  `source.load_material` checks files (our key, a chain signed up to the bundle, one SPIFFE
  ID), which must be our ID.
- `SvidRotator`: the first SVID at start, then a renewal at half of each SVID's lifetime (minus
  a bounded jitter, so a fleet started together does not renew in lockstep); while the CA is
  unreachable it retries with capped exponential backoff and jitter and keeps serving the last
  good SVID; each new SVID goes to the subscribers (the TLS layer rebuilds its context, so new
  handshakes use it while established connections carry on). It offers what
  `source.FileCertSource` offers (``current``, ``subscribe``, the same `CertMaterial`), so the
  TLS layer takes its certificate from files or from the CA alike.

Time and randomness are injected (`Clock`, ``rng``), never slept on or read directly.
Must not depend on: the controlplane (the CA's generated stubs are `meshproxy._gen`'s, imported
here at the wire's edge), the TLS engine (which subscribes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import grpc

from meshproxy._gen.ca.v1 import ca_pb2, ca_pb2_grpc
from meshproxy.errors import IdentityError
from meshproxy.identity import certs
from meshproxy.identity.grpc_tls import describe_rpc_error
from meshproxy.identity.source import CertMaterial, load_material
from meshproxy.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

# Refusals that a retry with the same configuration cannot change (a bad token, a denied ID).
PERMANENT_CODES = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "TOKEN_FILE", "TRUST_FILE"}
)
# gRPC shares subchannels between channels to one target by default, and with them the reconnect
# backoff of a failed connection: a channel of our own must really dial a CA that came back.
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


class SvidError(IdentityError):
    """No SVID this time; ``code`` is the gRPC status name, or TOKEN_FILE / TRUST_FILE / BAD_RESPONSE."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(f"{code}: {message}")

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT_CODES


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (compared with certificate expiry)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When to renew and how to back off; each jitter only ever shortens a delay, by a bounded share."""

    renew_fraction: float = 0.5
    renew_jitter: float = 0.05  # renew up to 5% of the lifetime before the half-way point
    retry_initial: float = 1.0
    retry_max: float = 60.0
    retry_jitter: float = 0.2  # each retry delay is 80-100% of the exponential step

    def renew_delay(self, lifetime: float, rng: random.Random) -> float:
        delay = lifetime * (self.renew_fraction - self.renew_jitter * rng.random())
        return max(delay, self.retry_initial)  # a CA clock far ahead must not make us spin

    def retry_delay(self, attempt: int, rng: random.Random) -> float:
        step = min(self.retry_max, self.retry_initial * 2.0 ** min(attempt, 32))
        return step * (1.0 - self.retry_jitter * rng.random())


class SvidClient:
    """Asks the CA at ``target`` (``host:port``) to sign a fresh key for ``spiffe_id``."""

    def __init__(
        self,
        target: str,
        spiffe_id: SpiffeId,
        token_file: Path,
        *,
        algorithm: certs.Algorithm = certs.Algorithm.ECDSA_P256,
        node_id: str = "",
        ttl: timedelta | None = None,
        trust_file: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.target = target
        self.spiffe_id = spiffe_id
        self.token_file = token_file
        self.algorithm = algorithm
        self.node_id = node_id
        self.ttl = ttl
        self.trust_file = trust_file
        self.timeout = timeout

    async def fetch(self) -> CertMaterial:
        token = self._read_token()
        key, csr = certs.generate_csr(self.spiffe_id, self.algorithm)
        request = ca_pb2.SignRequest(csr_pem=certs.csr_to_pem(csr).decode(), node_id=self.node_id)
        if self.ttl is not None:
            request.requested_ttl.FromTimedelta(self.ttl)
        if self.trust_file is None:
            channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=self._read_trust(self.trust_file))
            channel = grpc.aio.secure_channel(self.target, credentials, options=CHANNEL_OPTIONS)
        async with channel:
            stub = ca_pb2_grpc.CertificateAuthorityStub(channel)
            try:
                response = await stub.Sign(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=self.timeout
                )
            except grpc.aio.AioRpcError as exc:
                details = describe_rpc_error(exc, self.trust_file)
                raise SvidError(exc.code().name, f"CA at {self.target}: {details}") from None
        return self._material(key, response)

    @staticmethod
    def _read_trust(path: Path) -> bytes:
        try:
            bundle = path.read_bytes()
            certs.load_bundle(bundle, f"CA trust bundle {path}")
        except OSError as exc:
            raise SvidError("TRUST_FILE", f"cannot read the CA trust bundle ({exc})") from None
        except IdentityError as exc:
            raise SvidError("TRUST_FILE", str(exc)) from None
        return bundle

    def _read_token(self) -> str:
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SvidError("TOKEN_FILE", f"cannot read the bootstrap token file ({exc})") from None
        if not token:
            raise SvidError("TOKEN_FILE", f"{self.token_file} is empty")
        return token

    def _material(self, key: certs.PrivateKey, response: ca_pb2.SignResponse) -> CertMaterial:
        """The answer, checked as `load_material` checks files: our key, a chain to the bundle."""
        try:
            material = load_material(
                response.certificate_chain_pem.encode(),
                certs.key_to_pem(key),
                response.trust_bundle_pem.encode(),
                origins=(f"from the CA at {self.target}",) * 3,
            )
        except IdentityError as exc:
            raise SvidError("BAD_RESPONSE", str(exc)) from None
        if material.spiffe_id != self.spiffe_id:
            raise SvidError(
                "BAD_RESPONSE", f"the CA at {self.target} issued {material.spiffe_id}, not {self.spiffe_id}"
            )
        return material


class SvidRotator:
    """Holds the current SVID and renews it in the background (module docstring)."""

    def __init__(
        self,
        client: SvidClient,
        *,
        policy: RotationPolicy | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._policy = policy or RotationPolicy()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._current: CertMaterial | None = None
        self._renew_in = 0.0
        self._subscribers: list[Callable[[CertMaterial], None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> CertMaterial | None:
        """The last SVID obtained (possibly expired, if the CA has been away that long)."""
        return self._current

    def subscribe(self, callback: Callable[[CertMaterial], None]) -> Callable[[], None]:
        """Call ``callback`` with each new SVID; returns the function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    async def start(self) -> CertMaterial:
        """The first SVID (transient failures retried; a permanent refusal raised), then renewals."""
        svid = await self._obtain(first=True)
        self._task = asyncio.create_task(self._run(), name=f"svid-rotator {self._client.spiffe_id}")
        return svid

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._renew_in)
            try:
                await self._obtain(first=False)
            except Exception:  # a bug, not an outage: rotation must not stop for good
                log.exception("SVID rotation for %s failed unexpectedly", self._client.spiffe_id)
                self._renew_in = self._policy.retry_max

    async def _obtain(self, *, first: bool) -> CertMaterial:
        attempt = 0
        while True:
            try:
                svid = await self._client.fetch()
                lifetime = svid.not_after.timestamp() - self._clock.time()
                if lifetime <= 0:
                    raise SvidError(
                        "BAD_RESPONSE", f"the SVID expired at {svid.not_after} by our clock (skew?)"
                    )
            except SvidError as exc:
                if first and exc.permanent:
                    raise
                delay = self._policy.retry_delay(attempt, self._rng)
                attempt += 1
                serving = (
                    f"still serving the SVID that expires at {self._current.not_after.isoformat()}"
                    if self._current
                    else "no SVID yet"
                )
                log.log(
                    logging.ERROR if exc.permanent else logging.WARNING,
                    "SVID for %s: attempt %d failed (%s); %s; retrying in %.1fs",
                    self._client.spiffe_id,
                    attempt,
                    exc,
                    serving,
                    delay,
                )
                await self._clock.sleep(delay)
                continue
            self._renew_in = self._policy.renew_delay(lifetime, self._rng)
            self._current = svid
            log.info(
                "SVID for %s expires at %s; renewing in %.0fs",
                svid.spiffe_id,
                svid.not_after,
                self._renew_in,
            )
            for callback in list(self._subscribers):
                try:
                    callback(svid)
                except Exception:  # one broken subscriber must not stop rotation for the others
                    log.exception("SVID subscriber %r failed", callback)
            return svid
