"""The CA end to end: a real grpc.aio server on loopback, the real proxy-side client and rotator.

Time is a `FakeClock` shared by the CA and the rotator: the rotator's sleeps are recorded and
block until the test lets them elapse, so "renews at half-life" and "backs off 1, 2, 4, 8 s"
are assertions on recorded delays, not on wall time. grpc.aio runs on uvloop as well as on
asyncio, so these tests run on both loops like the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from controlplane.ca import Issuer
from controlplane.ca_service import CertificateAuthorityService, add_to_server
from controlplane.ca_store import load_or_create
from controlplane.cli import main as controlplane_main
from controlplane.tokens import Grant, TokensFile, append_token
from meshproxy._gen.ca.v1 import ca_pb2, ca_pb2_grpc
from meshproxy.identity import certs
from meshproxy.identity.source import CertMaterial
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.svid_client import RotationPolicy, SvidClient, SvidError, SvidRotator

TD = "mesh.local"
WEB = SpiffeId.parse("spiffe://mesh.local/ns/default/sa/web")
TOKEN = "integration-token-0123456789"
TTL = timedelta(hours=1)
STEP = 5.0  # bound on waiting for one event; never a synchronisation sleep


class HalfRandom(random.Random):
    """Every jitter draw is 0.5: delays become exact numbers inside their documented bounds."""

    def random(self) -> float:
        return 0.5


@dataclass
class FakeClock:
    """Wall time under the test's control. ``sleep`` records its delay and waits to be released."""

    now: float = field(default_factory=lambda: float(int(time.time())))
    _sleeping: asyncio.Queue[tuple[float, asyncio.Future[None]]] = field(default_factory=asyncio.Queue)

    def time(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    async def sleep(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self._sleeping.put_nowait((seconds, done))
        await done

    async def elapse_next(self) -> float:
        """Wait for the next sleep, let its time pass, release it; returns its delay."""
        seconds, done = await asyncio.wait_for(self._sleeping.get(), STEP)
        self.now += seconds
        done.set_result(None)
        return seconds

    async def next_delay(self) -> float:
        """The delay of the sleep the rotator is in now, without releasing it."""
        seconds, done = await asyncio.wait_for(self._sleeping.get(), STEP)
        self._sleeping.put_nowait((seconds, done))
        return seconds


@dataclass
class CA:
    service: CertificateAuthorityService
    port: int = 0
    server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        add_to_server(self.service, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_ca(tmp_path: Path, clock: FakeClock) -> AsyncIterator[CA]:
    tokens = tmp_path / "tokens"
    append_token(tokens, TOKEN, Grant.parse("spiffe://mesh.local/ns/default/sa/"))
    ca = load_or_create(tmp_path / "ca", trust_domain=TD, now=clock.utc())
    server = CA(CertificateAuthorityService(Issuer(ca), TokensFile(tokens, trust_domain=TD), clock=clock.utc))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client(
    tmp_path: Path,
    ca: CA,
    *,
    token: str = TOKEN,
    ttl: timedelta | None = TTL,
    algorithm: certs.Algorithm = certs.Algorithm.ECDSA_P256,
) -> SvidClient:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    return SvidClient(
        ca.target, WEB, token_file, node_id="sidecar~10.0.0.1~web", ttl=ttl, algorithm=algorithm
    )


@pytest.mark.parametrize("algorithm", list(certs.Algorithm), ids=lambda a: a.value)
async def test_issue_an_svid_whose_chain_verifies_against_the_bundle(
    tmp_path: Path, algorithm: certs.Algorithm
) -> None:
    clock = FakeClock()
    async with running_ca(tmp_path, clock) as ca:
        svid = await client(tmp_path, ca, algorithm=algorithm, ttl=TTL).fetch()
        async with grpc.aio.insecure_channel(ca.target) as channel:
            bundle = await ca_pb2_grpc.CertificateAuthorityStub(channel).TrustBundle(
                ca_pb2.TrustBundleRequest()
            )
    assert certs.verify_svid(svid.chain, svid.bundle, now=clock.utc()) == WEB
    assert certs.algorithm_of(svid.key) is algorithm and certs.key_matches(svid.chain[0], svid.key)
    assert svid.not_after == clock.utc() + TTL
    assert certs.load_bundle(bundle.trust_bundle_pem.encode()) == svid.bundle and bundle.trust_domain == TD


async def test_a_bad_token_is_unauthenticated_and_stops_the_rotator_at_start(tmp_path: Path) -> None:
    clock = FakeClock()
    async with running_ca(tmp_path, clock) as ca:
        async with grpc.aio.insecure_channel(ca.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ca_pb2_grpc.CertificateAuthorityStub(channel).Sign(
                    ca_pb2.SignRequest(csr_pem="x"),
                    metadata=(("authorization", "Bearer nope-0123456789abcdef"),),
                )
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "bootstrap token not recognised" in (info.value.details() or "")
        rotator = SvidRotator(client(tmp_path, ca, token="nope-0123456789abcdef"), clock=clock)
        with pytest.raises(SvidError, match=r"UNAUTHENTICATED: CA at .*: bootstrap token not recognised"):
            await rotator.start()
    assert rotator.current is None


def csr_outside_the_grant() -> str:
    _, csr = certs.generate_csr(SpiffeId.parse("spiffe://mesh.local/ns/other/sa/web"))
    return certs.csr_to_pem(csr).decode()


@pytest.mark.parametrize(
    ("csr_pem", "code", "message"),
    [
        (
            csr_outside_the_grant,
            grpc.StatusCode.PERMISSION_DENIED,
            "token grants spiffe://mesh.local/ns/default/sa/ only",
        ),
        (
            lambda: "garbage",
            grpc.StatusCode.INVALID_ARGUMENT,
            "csr_pem: CSR: not a PEM certificate signing request",
        ),
    ],
    ids=["outside-grant", "garbage"],
)
async def test_refusals_arrive_as_status_codes_with_their_reason(
    tmp_path: Path, csr_pem: Callable[[], str], code: grpc.StatusCode, message: str
) -> None:
    async with running_ca(tmp_path, FakeClock()) as ca, grpc.aio.insecure_channel(ca.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ca_pb2_grpc.CertificateAuthorityStub(channel).Sign(
                ca_pb2.SignRequest(csr_pem=csr_pem()), metadata=(("authorization", f"Bearer {TOKEN}"),)
            )
    assert info.value.code() is code and message in (info.value.details() or "")


async def test_rotation_renews_at_half_life_and_notifies_subscribers(tmp_path: Path) -> None:
    clock = FakeClock()
    policy = RotationPolicy()
    async with running_ca(tmp_path, clock) as ca:
        rotator = SvidRotator(client(tmp_path, ca, ttl=TTL), policy=policy, clock=clock, rng=HalfRandom())
        received: list[CertMaterial] = []
        rotator.subscribe(received.append)
        first = await rotator.start()
        try:
            for _ in range(2):
                delay = await clock.elapse_next()
                lifetime = TTL.total_seconds()
                assert delay == lifetime * (0.5 - policy.renew_jitter * 0.5)
                assert lifetime * (0.5 - policy.renew_jitter) <= delay <= lifetime * 0.5
                await clock.next_delay()  # the renewal is done: the rotator sleeps again
        finally:
            await rotator.close()
    assert received[0] is first
    assert len({s.chain[0].serial_number for s in received}) == 3
    assert len({certs.key_to_pem(s.key) for s in received}) == 3  # a new key every time
    assert rotator.current is received[-1]
    assert received[-1].not_after == clock.utc() + TTL


async def test_an_unreachable_ca_keeps_the_old_svid_and_retries_with_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    policy = RotationPolicy(retry_initial=1.0, retry_max=8.0, retry_jitter=0.2)
    async with running_ca(tmp_path, clock) as ca:
        rotator = SvidRotator(client(tmp_path, ca, ttl=TTL), policy=policy, clock=clock, rng=HalfRandom())
        received: list[CertMaterial] = []
        rotator.subscribe(received.append)
        first = await rotator.start()
        try:
            await ca.stop()
            await clock.elapse_next()  # half-life: the renewal finds no CA
            retries = [await clock.elapse_next() for _ in range(5)]
            assert retries == [0.9, 1.8, 3.6, 7.2, 7.2]  # 1, 2, 4, 8, 8 (capped), each minus 10% jitter
            assert await clock.next_delay() == 7.2  # the sixth attempt failed too
            assert rotator.current is first and received == [first]
            await ca.start()  # on the same port
            await clock.elapse_next()
            renewed = await clock.next_delay()
        finally:
            await rotator.close()
    assert received[-1] is rotator.current and received[-1] is not first
    lifetime = received[-1].not_after.timestamp() - clock.now  # X.509 drops the 20.7 s's fraction
    assert renewed == pytest.approx(lifetime * 0.475)


async def test_controlplane_serve_issues_over_its_command_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    assert controlplane_main(["token", "create", "--tokens", str(tokens), "--identity", str(WEB)]) == 0
    token = tokens.read_text().split()[0]
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "controlplane", "serve", "--ca-dir", str(tmp_path / "ca")],
        *["--tokens", str(tokens), "--state-dir", str(tmp_path / "state"), "--xds-address", "127.0.0.1:0"],
        *["--xds-tls-address", "off"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        assert line.startswith("controlplane: serving the CA on 127.0.0.1:"), line
        target = line.rsplit(" ", 1)[1].strip()
        token_file = tmp_path / "token"
        token_file.write_text(token)
        svid = await SvidClient(target, WEB, token_file).fetch()
        assert svid.not_after - svid.chain[0].not_valid_before_utc == timedelta(hours=24, minutes=1)
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert f"issued {WEB} to node ''" in stderr.decode()
