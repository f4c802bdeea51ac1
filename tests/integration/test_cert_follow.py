"""Certificates follow the configuration (DESIGN decision 10, issue 11): a renewal of the files
a TLS context was built from reaches it, whether the listener or cluster came from the
bootstrap, from a static SDS secret, or from an xDS update, and a listener or cluster an update
removed or replaced stops following.

The fast tests swap ``Server`` configurations with ``Server.apply`` (what the ADS client calls)
and certificate files the way a secret volume update lands, and look at what new handshakes
present: the serial a TLS client sees from a listener, and the client certificate hash
(``x-forwarded-client-cert``) an application behind the peer sidecar sees from a cluster.

The slow test is the demo's mesh over ADS with SVIDs of a 30 s lifetime: the real controlplane
(``controlplane serve --svid-ttl 30``) and two in-process sidecars whose identity agents keep
their SVIDs in the directories the controlplane's listeners and clusters name, renewing at
half-life: hello-v1's (an inbound listener from xDS in front of the hello application) and
web's (outbound listeners and mTLS clusters from xDS). For three lifetimes steady traffic goes
client → web's sidecar ══ PQ mTLS ══▶ hello's sidecar → hello. Meanwhile a TLS client keeps
handshaking with hello's inbound listener (the serial its new handshakes present), and web keeps
calling ``audit``, a service whose "sidecar" is the test's own mTLS server: it answers with
``Connection: close``, so each call is a new handshake of web's cluster and shows the client
serial it presents. Without rotation both stay on the first SVID, which expires after 30 s, and
handshakes then fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from certs import IssuedLeaf, make_ca, make_leaf, write_leaf
from cryptography.hazmat.primitives.serialization import Encoding
from sans import san_matchers

from controlplane.ca_store import load_or_create
from controlplane.tokens import Grant, append_token, new_token
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.identity import certs
from meshproxy.identity.agent import start_agent
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.server import Server
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.context import TlsContext
from meshproxy.tls.errors import TlsError
from meshproxy.tls.transport import accept_tls, connect_tls

from .controlplane_harness import ControlPlaneProcess, controlplane
from .harness import eventually, free_port, running_proxy
from .test_mesh_mtls import CLIENT_ID, DOWNSTREAM, SERVER_ID, inbound, outbound
from .test_mesh_xds import Load
from .test_mesh_xds import bootstrap as ads_bootstrap
from .upstreams import aiohttp_upstream

TIMEOUT = 20.0  # seconds: a rotation is picked up on the one-second housekeeping tick
LIFETIME = 20.0  # the SVIDs' lifetime here (the controlplane's floor is 10 s); renewed at about half
PACE = 0.5  # seconds between two probe handshakes (pacing, not synchronisation)


# ----------------------------------------------------------------------------- helpers


def _use_files(tls: dict[str, Any], files: tuple[pathlib.Path, ...]) -> None:
    """Point a CommonTlsContext's certificate, key and trusted CA at ``files``."""
    cert, key, ca = files
    tls["tls_certificates"] = [
        {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
    ]
    tls["validation_context"]["trusted_ca"] = {"filename": str(ca)}


def _swap(leaf: IssuedLeaf, live: tuple[pathlib.Path, ...]) -> None:
    """Atomically replace each file, the way a secret volume update lands."""
    for path, data in zip(live, (leaf.cert_pem, leaf.key_pem, leaf.ca.cert_pem), strict=True):
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        os.replace(tmp, path)


async def _presented_serial(port: int, client: TlsConfig) -> int:
    """The serial of the certificate a new handshake with ``port`` presents (no resumption: a
    fresh context); raises TlsError when the handshake fails (an expired certificate, say)."""
    loop = asyncio.get_running_loop()
    transport, _ = await connect_tls(loop, "127.0.0.1", port, TlsContext(client), asyncio.Protocol)
    try:
        return int(transport.get_extra_info("tls").peer_chain[0].serial_number)
    finally:
        transport.close()


def _client(leaf_pem: bytes, key_pem: bytes, ca_pem: bytes, expect: str) -> TlsConfig:
    return TlsConfig(
        server_side=False,
        certificate_chain=leaf_pem,
        private_key=key_pem,
        trusted_ca=ca_pem,
        match_sans=san_matchers(("exact", expect)),
    )


def _cert_hash(leaf: IssuedLeaf) -> str:
    return hashlib.sha256(leaf.cert.public_bytes(Encoding.DER)).hexdigest()


# ----------------------------------------------------------------------------- fast


async def test_xds_added_listener_and_replaced_cluster_rotate_and_removed_ones_unfollow(
    tmp_path: pathlib.Path,
) -> None:
    ca = make_ca()
    server_first, server_second = make_leaf(ca, SERVER_ID), make_leaf(ca, SERVER_ID)
    client_first, client_second = make_leaf(ca, CLIENT_ID), make_leaf(ca, CLIENT_ID)
    server_files = write_leaf(server_first, tmp_path / "server")
    client_files = write_leaf(client_first, tmp_path / "client")
    probe = _client(client_first.cert_pem, client_first.key_pem, ca.cert_pem, SERVER_ID)
    async with aiohttp_upstream("app") as app:
        doc_b = inbound(app, server_first)
        static = doc_b["static_resources"]["listeners"][0]
        _use_files(
            static["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"], server_files
        )
        async with running_proxy(doc_b) as b, httpx.AsyncClient() as http:
            # An update replaces the static listener by another (another name, another port).
            added = json.loads(json.dumps(static))
            added["name"] = "inbound-xds"
            doc_b["static_resources"]["listeners"] = [added]
            await b.server.apply(parse_bootstrap(json.dumps(doc_b), source="update 1"))
            assert set(b.server.listeners) == {"inbound-xds"}
            added_port = b.port("inbound-xds")
            assert len(b.server.certs) == 1, "the replaced listener no longer follows the files"

            doc_a = outbound(added_port, client_first, tmp_path / "a.log")
            mesh = doc_a["static_resources"]["clusters"][0]
            _use_files(mesh["transport_socket"]["typed_config"]["common_tls_context"], client_files)
            mesh["common_http_protocol_options"] = {"max_requests_per_connection": 1}
            async with running_proxy(doc_a) as a:
                before = a.server.clusters.get("mesh")
                mesh["connect_timeout"] = "2s"  # an update that changes the cluster
                await a.server.apply(parse_bootstrap(json.dumps(doc_a), source="update 1"))
                replaced = a.server.clusters.get("mesh")
                assert replaced is not None and replaced is not before
                assert len(a.server.certs) == 1, "the replaced cluster runtime no longer follows"

                async def caller_hash() -> str:
                    resp = await http.get(a.url("/echo", "outbound"))
                    assert resp.status_code == 200, resp.text
                    xfcc = dict(json.loads(resp.content)["headers"])["x-forwarded-client-cert"]
                    return str(dict(p.split("=", 1) for p in xfcc.split(";"))["Hash"])

                assert await caller_hash() == _cert_hash(client_first)
                assert await _presented_serial(added_port, probe) == server_first.cert.serial_number
                _swap(server_second, server_files)
                _swap(client_second, client_files)
                served: list[int] = []
                seen: list[str] = []

                async def rotated() -> bool:
                    served.append(await _presented_serial(added_port, probe))
                    seen.append(await caller_hash())
                    return served[-1] == server_second.cert.serial_number and seen[-1] == _cert_hash(
                        client_second
                    )

                try:
                    async with asyncio.timeout(TIMEOUT):
                        while not await rotated():
                            await asyncio.sleep(PACE / 5)  # pacing handshakes until the tick has run
                except TimeoutError:
                    raise AssertionError(
                        f"after {TIMEOUT}s new handshakes present: listener serial {served[-1]:x} "
                        f"(the new one is {server_second.cert.serial_number:x}), client certificate "
                        f"hash {seen[-1]} (the new one is {_cert_hash(client_second)})"
                    ) from None
                # Every handshake since presented the first set or the second, never a gap.
                assert set(served) <= {server_first.cert.serial_number, server_second.cert.serial_number}
                assert set(seen) <= {_cert_hash(client_first), _cert_hash(client_second)}
                listed = (await http.get(b.admin_url + "/certs")).json()
                assert [c["cert_chain"][0]["serial_number"] for c in listed] == [
                    format(server_second.cert.serial_number, "x")
                ]

            # An update that removes the TLS listener: nothing follows, nothing is polled.
            plain = json.loads(json.dumps(added))
            del plain["filter_chains"][0]["transport_socket"]
            doc_b["static_resources"]["listeners"] = [plain]
            await b.server.apply(parse_bootstrap(json.dumps(doc_b), source="update 2"))
            assert len(b.server.certs) == 0 and b.server.certs.sources == {}


async def test_static_sds_secrets_that_name_files_follow_them(tmp_path: pathlib.Path) -> None:
    ca = make_ca()
    first, second = make_leaf(ca, SERVER_ID), make_leaf(ca, SERVER_ID)
    client = make_leaf(ca, CLIENT_ID)
    cert, key, bundle = write_leaf(first, tmp_path / "svid")
    async with aiohttp_upstream("app") as app:
        doc = inbound(app, first)
        tls = doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        assert tls["@type"] == DOWNSTREAM
        common = tls["common_tls_context"]
        matchers = common["validation_context"]["match_typed_subject_alt_names"]
        del common["tls_certificates"], common["validation_context"]
        common["tls_certificate_sds_secret_configs"] = [{"name": "svid"}]
        common["validation_context_sds_secret_config"] = {"name": "bundle"}
        doc["static_resources"]["secrets"] = [
            {
                "name": "svid",
                "tls_certificate": {
                    "certificate_chain": {"filename": str(cert)},
                    "private_key": {"filename": str(key)},
                },
            },
            {
                "name": "bundle",
                "validation_context": {
                    "trusted_ca": {"filename": str(bundle)},
                    "match_typed_subject_alt_names": matchers,
                },
            },
        ]
        async with running_proxy(doc) as b:
            probe = _client(client.cert_pem, client.key_pem, ca.cert_pem, SERVER_ID)
            port = b.port("inbound")
            assert await _presented_serial(port, probe) == first.cert.serial_number
            _swap(second, (cert, key, bundle))
            try:
                async with asyncio.timeout(TIMEOUT):
                    while await _presented_serial(port, probe) != second.cert.serial_number:
                        await asyncio.sleep(PACE / 5)  # pacing handshakes until the tick has run
            except TimeoutError:
                raise AssertionError(
                    f"new handshakes still present the first serial after {TIMEOUT}s"
                ) from None


# ----------------------------------------------------------------------------- slow: the mesh


def _identity(service: str) -> str:
    return f"spiffe://mesh.local/ns/test/sa/{service}"


HELLO, WEB, AUDIT = _identity("hello"), _identity("web"), _identity("audit")


def _mesh_yaml(cert_root: pathlib.Path, ports: dict[str, int]) -> str:
    """hello (one version behind its own sidecar), audit (whose sidecar the test plays) and web,
    outbound only, allowed to call both; every sidecar's certificates in ``cert_root/<group>``."""
    versions = {
        name: f'v1: {{endpoints: ["127.0.0.1:{ports[name + "_in"]}"], '
        f'sidecar: {{inbound: "127.0.0.1:{ports[name + "_in"]}", app: "127.0.0.1:{ports[name + "_app"]}"}}}}'
        for name in ("hello", "audit")
    }
    return f"""\
mesh: {{trust_domain: mesh.local, pq: required, namespace: test}}
sidecars: {{cert_dir: "{cert_root}/{{group}}", outbound_address: 127.0.0.1}}
services:
  - name: hello
    port: {ports["hello"]}
    protocol: http
    versions: {{{versions["hello"]}}}
    allow: [web]
  - name: audit
    port: {ports["audit"]}
    protocol: http
    versions: {{{versions["audit"]}}}
    allow: [web]
  - name: web
    port: {ports["web"]}
    sidecar: {{}}
    allow: []
"""


class _Audit(asyncio.Protocol):
    """Stands in for audit's sidecar: notes the client serial each connection's handshake
    presented, answers one HTTP/1.1 request with ``Connection: close``."""

    def __init__(self, serials: list[int]) -> None:
        self.serials = serials
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TlsTransport
        self.serials.append(int(transport.get_extra_info("tls").peer_chain[0].serial_number))

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head and self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\naudit\n")
            self.transport.close()


class _Accept(asyncio.Protocol):
    def __init__(self, tls: TlsContext, serials: list[int]) -> None:
        self.tls = tls
        self.serials = serials

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        accept_tls(cast(asyncio.Transport, transport), self.tls, _Audit(self.serials))


@contextlib.asynccontextmanager
async def _audit_sidecar(port: int, leaf: tuple[bytes, bytes], bundle: bytes) -> AsyncIterator[list[int]]:
    tls = TlsContext(
        TlsConfig(
            server_side=True,
            certificate_chain=leaf[0],
            private_key=leaf[1],
            trusted_ca=bundle,
            require_client_certificate=True,
            match_sans=san_matchers(("exact", WEB)),
        )
    )
    serials: list[int] = []
    server = await asyncio.get_running_loop().create_server(lambda: _Accept(tls, serials), "127.0.0.1", port)
    try:
        yield serials
    finally:
        server.close()


def _sign(cp: ControlPlaneProcess, identity: str) -> tuple[bytes, bytes]:
    """A one-hour SVID from the controlplane's CA, for what the test itself plays."""
    ca = load_or_create(cp.workdir / "ca", trust_domain="mesh.local", now=datetime.now(UTC))
    key, csr = certs.generate_csr(SpiffeId.parse(identity))
    cert = certs.sign_csr(ca, csr, SpiffeId.parse(identity), now=datetime.now(UTC), ttl=timedelta(hours=1))
    return certs.certs_to_pem([cert]), certs.key_to_pem(key)


@contextlib.asynccontextmanager
async def _sidecar(
    cp: ControlPlaneProcess, group: str, identity: str, cert_dir: pathlib.Path
) -> AsyncIterator[tuple[Server, list[int]]]:
    """A sidecar of ``group`` with its identity agent: ready, and every serial its agent issued."""
    token = new_token()
    append_token(cp.workdir / "bootstrap-tokens", token, Grant.parse(identity))
    token_file = cert_dir.parent / f"{group}.token"
    token_file.write_text(token + "\n")
    rotator = await start_agent(cp.address, identity, token_file, cert_dir)
    current = rotator.current
    assert current is not None
    issued = [current.chain[0].serial_number]
    rotator.subscribe(lambda m: issued.append(m.chain[0].serial_number))
    doc = ads_bootstrap(cp.port, "GRPC" if group == "web" else "DELTA_GRPC")
    doc["node"] = {"id": f"{group}-sidecar", "cluster": group}
    server = Server(parse_bootstrap(json.dumps(doc), source=group))
    try:
        await server.start()
        await eventually(lambda: server.ready, TIMEOUT, f"{group}'s first complete config over ADS")
        yield server, issued
    finally:
        await server.close()
        await rotator.close()


async def _listed_serials(http: httpx.AsyncClient, server: Server, key: str) -> set[str]:
    """The leaf serials the admin ``/certs`` lists for the listeners or clusters (``key``)."""
    address = server.admin.address()
    assert address is not None
    listed = (await http.get(f"http://{address[0]}:{address[1]}/certs")).json()
    return {c["cert_chain"][0]["serial_number"] for c in listed if key in c}


def _in_issue_order(seen: list[int], issued: list[int], what: str) -> None:
    """New handshakes presented each SVID the agent issued (but the last, which may have come
    moments before the end), in order, never an older one after a newer."""
    assert set(seen) <= set(issued), f"{what}: presented serials the agent never issued"
    order = [issued.index(s) for s in seen]
    assert order == sorted(order), f"{what}: went back to an older SVID"
    missed = set(issued[:-1]) - set(seen)
    assert not missed, f"{what}: {len(missed)} of {len(issued)} SVIDs never reached a new handshake"
    assert len(issued) >= 4, f"{what}: only {len(issued)} SVIDs in three lifetimes"


async def _every(pace: float, until: float, step: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        await step()
        await asyncio.sleep(pace)  # pacing the probes, not waiting for anything


async def _until_listed(read: Callable[[], Awaitable[set[str]]], want: set[str], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while (got := await read()) != want:
        assert loop.time() < deadline, f"{what}: lists {got}, not {want}, after {TIMEOUT}s"
        await asyncio.sleep(PACE / 5)  # polling the admin endpoint: a renewal may be in flight


@pytest.mark.slow
async def test_mesh_over_ads_rotates_20s_svids_under_steady_traffic(tmp_path: pathlib.Path) -> None:
    cert_root = tmp_path / "certs"
    cert_root.mkdir()
    async with aiohttp_upstream("v1") as app:
        ports = {name: free_port() for name in ("hello", "hello_in", "audit", "audit_in", "audit_app", "web")}
        ports["hello_app"] = app
        async with (
            controlplane(tmp_path, _mesh_yaml(cert_root, ports), args=["--svid-ttl", str(LIFETIME)]) as cp,
            _sidecar(cp, "hello-v1", HELLO, cert_root / "hello-v1") as (hello, hello_issued),
            _sidecar(cp, "web", WEB, cert_root / "web") as (web, web_issued),
        ):
            bundle = (cert_root / "web" / "ca.pem").read_bytes()
            async with _audit_sidecar(ports["audit_in"], _sign(cp, AUDIT), bundle) as audit_seen:
                probed, failures = await _three_lifetimes(ports, _client(*_sign(cp, WEB), bundle, HELLO))
            assert failures == [], failures[:5]
            _in_issue_order(probed, hello_issued, "hello's inbound listener (from xDS)")
            _in_issue_order(audit_seen, web_issued, "web's cluster for audit (from xDS)")
            # The admin /certs lists what new handshakes present (once a renewal in flight is in).
            async with httpx.AsyncClient(timeout=10) as http:
                await _until_listed(
                    lambda: _listed_serials(http, hello, "listener"),
                    {format(hello_issued[-1], "x")},
                    "hello's /certs",
                )
                await _until_listed(
                    lambda: _listed_serials(http, web, "cluster"),
                    {format(web_issued[-1], "x")},
                    "web's /certs",
                )


async def _three_lifetimes(ports: dict[str, int], probe: TlsConfig) -> tuple[list[int], list[str]]:
    """Steady traffic to hello through web for three SVID lifetimes while probing hello's inbound
    listener and calling audit; the serials hello presented, and every failure of any of them."""
    probed: list[int] = []
    failures: list[str] = []

    async def probe_hello() -> None:
        try:
            probed.append(await _presented_serial(ports["hello_in"], probe))
        except (TlsError, OSError) as exc:
            failures.append(f"handshake with hello's inbound listener: {exc}")

    async with httpx.AsyncClient(timeout=10) as http:

        async def call_audit() -> None:
            try:
                resp = await http.get(f"http://127.0.0.1:{ports['audit']}/")
            except httpx.HTTPError as exc:
                failures.append(f"audit: {type(exc).__name__}: {exc}")
                return
            if resp.status_code != 200:
                failures.append(f"audit: {resp.status_code}: {resp.text[:120]}")

        # Three lifetimes of unpaced traffic: about 600 requests a second here, so the budget
        # is sized to the duration (the default 50,000 ran out before the end on a fast machine).
        url = f"http://127.0.0.1:{ports['hello']}/echo"
        async with Load(url, workers=2, limit=int(3 * LIFETIME * 5_000)).running() as load:
            assert await load.more(20, "traffic through web's and hello's sidecars") == {"v1"}
            until = asyncio.get_running_loop().time() + 3 * LIFETIME
            await asyncio.gather(_every(PACE, until, probe_hello), _every(PACE, until, call_audit))
            assert await load.more(20, "traffic after three lifetimes") == {"v1"}
    return probed, failures + load.failures
