"""``meshproxy run --concurrency 2``: two worker processes behind one supervisor, real sockets.

The proxy runs as a child process (``harness.proxy_process``) with real upstreams, a fake
control plane (``test_xds_client.FakeAds``) where xDS is tested, and real mTLS with
certificate files renewed in place (``test_cert_follow``'s helpers) for rotation. Which worker
takes a connection is the kernel's choice (SO_REUSEPORT hashes each connection's addresses):
every test sends enough connections, each a fresh one, that both workers get some unless the
spreading is broken (the chance that 40 connections all land on one of two workers is 2**-39).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from certs import make_ca, make_leaf, write_leaf
from prometheus_client.parser import text_string_to_metric_families

from meshproxy.xds.resources import LISTENER, ROUTE

from .harness import ProxyProcess, bootstrap, cluster, free_port, http_listener, proxy_process, route
from .test_cert_follow import _client, _presented_serial, _swap, _use_files
from .test_mesh_mtls import CLIENT_ID, SERVER_ID, inbound
from .test_xds_client import _sotw_initial, fake_ads, rds_listener, routes, xds_bootstrap
from .upstreams import aiohttp_upstream, threaded_upstream

WORKERS = ("--concurrency", "2")
CONNECTIONS = 40
TIMEOUT = 20.0


def fresh_get(port: int, path: str = "/echo") -> tuple[int, dict[str, str]]:
    """One request on a connection of its own: (status, response headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def admin_json(proc: ProxyProcess, path: str) -> Any:
    status, body = proc.admin(path)
    assert status == 200, (path, body)
    return json.loads(body)


def worker_stat(proc: ProxyProcess, index: int, name: str) -> int:
    value: int = admin_json(proc, f"/stats?worker={index}&format=flat")[name]
    return value


def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (admin state of a child process) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_listener_and_the_admin_sums_them(tmp_path: pathlib.Path) -> None:
    with threaded_upstream("a") as upstream:
        doc = bootstrap([http_listener([route()])], [cluster("backend", upstream)])
        with proxy_process(doc, tmp_path, args=WORKERS) as proc:
            workers = admin_json(proc, "/workers")
            assert [w["serving"] for w in workers] == [True, True]
            assert proc.pid not in {w["pid"] for w in workers} and len({w["pid"] for w in workers}) == 2

            statuses = [fresh_get(proc.port())[0] for _ in range(CONNECTIONS)]
            assert statuses == [200] * CONNECTIONS

            per_worker = [worker_stat(proc, i, "listener.http.downstream_cx_total") for i in (0, 1)]
            assert all(n > 0 for n in per_worker), f"both workers accept connections: {per_worker}"
            assert sum(per_worker) == CONNECTIONS
            stats = proc.stats()
            assert stats["listener.http.downstream_cx_total"] == CONNECTIONS
            assert stats["http.http.downstream_rq_total"] == CONNECTIONS
            assert stats["http.http.downstream_rq_xx"][2] == CONNECTIONS
            assert stats["cluster.backend.upstream_rq_total"] == CONNECTIONS
            assert stats["http.http.downstream_rq_time"]["count"] == CONNECTIONS
            # One cluster seen by both workers: its membership is one host, not two.
            assert stats["cluster.backend.membership_total"] == 1
            assert stats["server.worker_restarts"] == 0

            status, body = proc.admin("/stats/prometheus")
            assert status == 200
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode())
                for s in family.samples
            }
            assert samples[("meshproxy_http_downstream_rq_total", (("stat_prefix", "http"),))] == CONNECTIONS
            assert samples[("meshproxy_server_worker_restarts_total", ())] == 0
            assert samples[("meshproxy_server_live", ())] == 1

            [backend] = admin_json(proc, "/clusters")
            assert backend["upstream_rq_total"] == CONNECTIONS
            assert sum(h["rq_total"] for h in backend["hosts"]) == CONNECTIONS
            dump = admin_json(proc, "/config_dump?format=compiled")
            assert [ln["name"] for ln in dump["config"]["listeners"]] == ["http"]
            assert dump["config"]["listeners"][0]["address"]["port"] == proc.port()
            assert [w["version"] for w in dump["workers"]] == ["static", "static"]
            assert admin_json(proc, "/listeners") == [
                {"name": "http", "address": f"127.0.0.1:{proc.port()}", "draining": False}
            ]


def test_a_killed_worker_is_restarted_counted_and_traffic_continues(tmp_path: pathlib.Path) -> None:
    with threaded_upstream("a") as upstream:
        doc = bootstrap([http_listener([route()])], [cluster("backend", upstream)])
        with proxy_process(doc, tmp_path, args=WORKERS) as proc:
            before = admin_json(proc, "/workers")
            victim = before[1]["pid"]
            os.kill(victim, signal.SIGKILL)

            def replaced() -> bool:
                w = admin_json(proc, "/workers")[1]
                return bool(w["serving"] and w["pid"] not in (None, victim))

            until(replaced, "worker 1 replaced")
            until(lambda: proc.admin("/ready")[0] == 200, "ready with the new worker")
            assert not pid_alive(victim)
            after = admin_json(proc, "/workers")
            assert after[0]["pid"] == before[0]["pid"], "the other worker is left alone"
            assert [w["restarts"] for w in after] == [0, 1]
            assert proc.stats()["server.worker_restarts"] == 1

            statuses = [fresh_get(proc.port())[0] for _ in range(CONNECTIONS)]
            assert statuses == [200] * CONNECTIONS, "no request fails after the replacement"
            assert worker_stat(proc, 1, "http.http.downstream_rq_total") > 0, "the new worker serves"
            assert worker_stat(proc, 0, "http.http.downstream_rq_total") > 0
            assert any("worker 1" in line and "restarting" in line for line in proc.log)


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: pathlib.Path) -> None:
    """In-flight requests on both workers finish after SIGTERM; then every process ends, 0."""
    with threaded_upstream("a") as upstream:
        doc = bootstrap([http_listener([route()])], [cluster("backend", upstream)])
        with proxy_process(doc, tmp_path, args=WORKERS) as proc:
            pids = [w["pid"] for w in admin_json(proc, "/workers")]
            results: list[int] = []
            threads = [
                threading.Thread(target=lambda: results.append(fresh_get(proc.port(), "/delay/1")[0]))
                for _ in range(16)
            ]
            for t in threads:
                t.start()
            until(lambda: proc.stats()["http.http.downstream_rq_active"] == 16, "16 requests in flight")
            active = [worker_stat(proc, i, "http.http.downstream_rq_active") for i in (0, 1)]
            assert all(n > 0 for n in active), f"both workers hold requests: {active}"

            proc.proc.send_signal(signal.SIGTERM)
            assert proc.proc.wait(timeout=TIMEOUT) == 0
            for t in threads:
                t.join(timeout=TIMEOUT)
            assert results == [200] * 16
            assert not any(pid_alive(pid) for pid in pids)
            for index in (0, 1):
                assert any(f"[worker {index}]: inbound listeners drained" in line for line in proc.log)
                assert any(f"worker {index} (pid" in line and "exit code 0" in line for line in proc.log)


def test_workers_end_when_their_supervisor_is_killed(tmp_path: pathlib.Path) -> None:
    doc = bootstrap([http_listener([route()])], [cluster("backend", free_port())])
    with proxy_process(doc, tmp_path, args=WORKERS) as proc:
        pids = [w["pid"] for w in admin_json(proc, "/workers")]
        proc.proc.kill()
        proc.proc.wait(timeout=TIMEOUT)
        until(lambda: not any(pid_alive(pid) for pid in pids), "both workers ended")
        assert sum("supervisor gone; shutting down" in line for line in proc.log) == 2


async def test_an_xds_update_reaches_every_worker_and_a_bind_failure_is_one_nack(
    tmp_path: pathlib.Path,
) -> None:
    async with (
        aiohttp_upstream("a") as upstream,
        fake_ads() as (ads, _, ads_port),
        httpx.AsyncClient(timeout=10) as client,
    ):
        with contextlib.ExitStack() as stack:
            proc = await asyncio.to_thread(
                stack.enter_context,
                proxy_process(xds_bootstrap(ads_port), tmp_path, args=WORKERS, ready=False),
            )
            admin = f"http://127.0.0.1:{proc.admin_port}"

            async def get(path: str) -> Any:
                return (await client.get(admin + path)).json()

            port = free_port()
            await _sotw_initial(ads, port, upstream)
            await _until(lambda: client.get(admin + "/ready"), 200)

            # The update replaces the listener in each worker (its socket handed over) while
            # fresh connections keep arriving: none fails.
            async with steady_load(port) as load:
                await _until_served(load, 10)
                ads.send_sotw(ROUTE, "r2", [routes("main", "backend", header="v2")])
                assert (await ads.request(ROUTE)).version_info == "r2"
                mark = len(load.served)
                await _until_served(load, mark + 10)
            assert load.failures == [] and len(load.served) > mark
            version = (await get("/config_dump?format=compiled"))["version"]
            assert "r2" in version
            workers = await get("/workers")
            assert [(w["version"], w["current"]) for w in workers] == [(version, True)] * 2
            before = [
                (await get(f"/stats?worker={i}&format=flat"))["http.http.downstream_rq_total"] for i in (0, 1)
            ]
            configs = [
                (await asyncio.to_thread(fresh_get, port))[1].get("x-config") for _ in range(CONNECTIONS)
            ]
            assert configs == ["v2"] * CONNECTIONS, "every worker routes with the update"
            after = [
                (await get(f"/stats?worker={i}&format=flat"))["http.http.downstream_rq_total"] for i in (0, 1)
            ]
            assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

            # A worker restarted after an update starts on the accepted configuration.
            victim = workers[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            async with asyncio.timeout(TIMEOUT):
                while (await get("/workers"))[0]["pid"] in (victim, None):
                    await asyncio.sleep(0.05)
            await _until(lambda: client.get(admin + "/ready"), 200)
            workers = await get("/workers")
            assert workers[0]["pid"] != victim and workers[0]["restarts"] == 1
            assert [(w["version"], w["current"]) for w in workers] == [(version, True)] * 2
            configs = [
                (await asyncio.to_thread(fresh_get, port))[1].get("x-config") for _ in range(CONNECTIONS)
            ]
            assert configs == ["v2"] * CONNECTIONS

            # A listener on an address someone else holds: the supervisor refuses it, once.
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                nonce = ads.send_sotw(
                    LISTENER, "l2", [rds_listener("http", "main", port), rds_listener("x", "main", busy)]
                )
                nack = await ads.request(LISTENER, lambda r: r.response_nonce == nonce)
            assert nack.version_info == "l1"
            assert f'listener "x": cannot bind 127.0.0.1:{busy}' in nack.error_detail.message
            dump = await get("/config_dump?format=compiled")
            assert dump["xds"]["types"]["Listener"]["nacks"] == 1
            assert dump["version"] == version
            assert [(w["version"], w["current"]) for w in dump["workers"]] == [(version, True)] * 2

            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.proc.wait, TIMEOUT) == 0


class SteadyLoad:
    """Requests, each on a fresh connection, from a thread until stopped; every outcome recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.served: list[str | None] = []  # x-config of each 200
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, headers = fresh_get(self.port)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.served.append(headers.get("x-config"))
            else:
                self.failures.append(str(status))


@contextlib.asynccontextmanager
async def steady_load(port: int) -> AsyncIterator[SteadyLoad]:
    """The upstream runs on the test's loop: the thread is joined without blocking it."""
    load = SteadyLoad(port)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        await asyncio.to_thread(thread.join, TIMEOUT)


async def _until_served(load: SteadyLoad, n: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while len(load.served) + len(load.failures) < n:
            await asyncio.sleep(0.02)


async def _until(request: Callable[[], Any], status: int, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await request()).status_code != status:
        if loop.time() > deadline:
            raise AssertionError(f"admin never answered {status} within {timeout}s")
        await asyncio.sleep(0.05)


def test_the_status_ports_and_the_help_answer_for_the_workers(tmp_path: pathlib.Path) -> None:
    doc = bootstrap([http_listener([route()])], [cluster("backend", free_port())])
    ports = ("--ready-port", "0", "--prometheus-port", "0")
    with proxy_process(doc, tmp_path, args=(*WORKERS, *ports)) as proc:
        status, text = proc.admin("/help")
        assert status == 200 and b"/workers" in text and b"/stats?worker=I" in text
        assert proc.admin("/stats?worker=2")[0] == 400
        # /stats in Envoy's text format, folded; one worker's in it too; Envoy's ServerInfo.
        status, text = proc.admin("/stats?filter=^server\\.")
        assert status == 200 and text.decode().splitlines() == [
            "server.draining: 0",
            "server.live: 1",
            "server.worker_restarts: 0",
        ]
        status, text = proc.admin("/stats?worker=0&type=Counters&filter=downstream_rq_total")
        assert status == 200 and text.decode().splitlines() == ["http.http.downstream_rq_total: 0"]
        assert admin_json(proc, "/server_info")["command_line_options"]["concurrency"] == 2
        ready = f"http://127.0.0.1:{proc.status['/healthz/ready']}/healthz/ready"
        assert httpx.get(ready).status_code == 200
        scrape = f"http://127.0.0.1:{proc.status['/stats/prometheus']}/stats/prometheus"
        assert "meshproxy_server_worker_restarts_total 0.0" in httpx.get(scrape).text


def test_an_address_taken_stops_the_start_naming_the_listener(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        listener = http_listener([route()])
        listener["address"]["socket_address"]["port_value"] = busy
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(bootstrap([listener], [cluster("backend", free_port())])))
        result = subprocess.run(
            [sys.executable, "-m", "meshproxy", "run", "-c", str(path), *WORKERS],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 3, result.stderr
    assert f'cannot start: [Errno 98] listener "http": cannot bind 127.0.0.1:{busy}: ' in result.stderr
    assert "worker 0 serving" not in result.stderr, "no worker starts"


async def test_a_certificate_rotation_reaches_every_worker(tmp_path: pathlib.Path) -> None:
    """Each worker follows the certificate files itself: after a renewal lands, a batch of
    fresh handshakes spread over both workers presents only the new certificate."""
    ca = make_ca()
    first, second = make_leaf(ca, SERVER_ID), make_leaf(ca, SERVER_ID)
    client = make_leaf(ca, CLIENT_ID)
    files = write_leaf(first, tmp_path / "svid")
    probe = _client(client.cert_pem, client.key_pem, ca.cert_pem, SERVER_ID)
    async with aiohttp_upstream("app") as app:
        doc = inbound(app, first)
        tls = doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        _use_files(tls["common_tls_context"], files)
        with contextlib.ExitStack() as stack:
            proc = await asyncio.to_thread(stack.enter_context, proxy_process(doc, tmp_path, args=WORKERS))
            port = proc.port("inbound")

            async def batch() -> tuple[set[int], list[int]]:
                """Serials presented by CONNECTIONS fresh handshakes, and each worker's share."""
                stat = "listener.inbound.downstream_pre_cx_total"
                before = [await asyncio.to_thread(worker_stat, proc, i, stat) for i in (0, 1)]
                serials = {await _presented_serial(port, probe) for _ in range(CONNECTIONS)}
                after = [await asyncio.to_thread(worker_stat, proc, i, stat) for i in (0, 1)]
                return serials, [a - b for a, b in zip(after, before, strict=True)]

            serials, shares = await batch()
            assert serials == {first.cert.serial_number} and all(shares), shares
            _swap(second, files)
            async with asyncio.timeout(TIMEOUT):
                while (await batch())[0] != {second.cert.serial_number}:
                    pass  # each batch takes its handshakes' time; the workers poll once a second
            serials, shares = await batch()
            assert serials == {second.cert.serial_number}
            assert all(shares), f"both workers handshook with the new certificate: {shares}"
