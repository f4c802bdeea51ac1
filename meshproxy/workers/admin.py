"""The admin port of ``--concurrency N``: one endpoint answering for all the workers.

Owns turning the workers' answers into one proxy's: ``/stats`` (in each of its formats,
``admin/stats_format.py``) and ``/stats/prometheus`` fold every worker's stats
(``aggregate.py``: counters summed, gauges summed or the highest where each worker holds a copy
of one fact) with the supervisor's process scope (``server.live``, ``server.draining``,
``server.worker_restarts``) and the ADS client's ``xds.*``; ``/stats?worker=I`` is worker I's own;
``/clusters`` is folded the same way; ``/config_dump`` is the one configuration the supervisor
accepted, with the ADS client's state; ``/ready`` is 200 when the supervisor is ready and every
worker serves what it accepted last; ``/workers`` lists the workers. ``/certs`` is the first
worker's (all follow the same files); ``/drain_listeners`` reaches every worker. Answers come
once the workers have (the endpoint awaits them, each worker bounded by ``ASK_TIMEOUT``).
Must not sit on the request path.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from meshproxy.addresses import host_port
from meshproxy.admin.endpoint import Answer, Endpoint, json_answer, method_not_allowed
from meshproxy.admin.prometheus import exposition
from meshproxy.admin.server import HELP, envoy_config_dump, jsonable
from meshproxy.admin.server_info import server_info
from meshproxy.admin.stats_format import QueryError, StatsQuery
from meshproxy.overload.stats import OverloadCollector, OverloadStats
from meshproxy.stats import StatsCollector, Store
from meshproxy.workers.aggregate import merge_clusters, merge_stores

if TYPE_CHECKING:
    from meshproxy.workers.supervisor import Supervisor

ASK_TIMEOUT = 5.0

_HELP = (
    HELP
    + """  GET  /stats?worker=I      worker I's own stats (0-based), in any of /stats's formats
  GET  /workers            the worker processes: pid, serving, restarts, configuration version
"""
)


class WorkersAdmin:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._srv: asyncio.Server | None = None
        self.started = time.monotonic()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._srv = await loop.create_server(lambda: Endpoint(self.handle), host, port, reuse_address=True)

    def address(self) -> tuple[str, int] | None:
        if self._srv is None:
            return None
        name = self._srv.sockets[0].getsockname()
        return name[0], name[1]

    def close(self) -> None:
        if self._srv is not None:
            self._srv.close()

    async def handle(self, method: bytes, target: str) -> Answer:
        path, _, query = target.partition("?")
        sup = self.supervisor
        if path == "/ready":
            return self.readiness()
        if path == "/stats/prometheus":
            return await self.prometheus()
        if path == "/stats":
            rest = "&".join(p for p in query.split("&") if p and not p.startswith("worker="))
            try:
                stats = StatsQuery.parse(rest)
            except QueryError as err:
                return 400, f"{err}\n".encode(), b"text/plain"
            worker = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)).get("worker")
            if worker is not None:
                return await self._one_worker(worker, method, f"/stats?{rest}")
            if stats.format == "prometheus":
                return await self.prometheus()
            return stats.answer(*await self._stats())
        if path == "/config_dump":
            if "format=compiled" not in query.split("&"):
                return envoy_config_dump(sup.config, sup.xds, query, self.started)
            dump: dict[str, Any] = {"version": sup.config.version, "config": jsonable(sup.config)}
            if sup.xds is not None:
                dump["xds"] = sup.xds.status()
            dump["workers"] = self._workers()
            return json_answer(dump)
        if path == "/clusters":
            answers = await sup.ask(("admin", b"GET", "/clusters"), ASK_TIMEOUT)
            return json_answer(merge_clusters([json.loads(body) for _, (_, body, _) in answers]))
        if path == "/listeners":
            return json_answer(
                [
                    {"name": name, "address": host_port(*address), "draining": sup.draining}
                    for name, address in sup.listener_addresses().items()
                ]
            )
        if path == "/server_info":
            return json_answer(
                server_info(
                    sup.config,
                    ready=sup.ready,
                    draining=sup.draining,
                    started=self.started,
                    concurrency=len(sup.workers),
                    query=query,
                )
            )
        if path == "/workers":
            return json_answer(self._workers())
        if path == "/certs":
            return await self._one_worker("0", method, path)
        if path in ("/drain_listeners", "/quitquitquit", "/healthcheck/fail", "/healthcheck/ok"):
            if method != b"POST":
                return method_not_allowed(b"POST")
            if path.startswith("/healthcheck/"):
                await sup.ask(("admin", b"POST", path), ASK_TIMEOUT)  # each worker's health checks
                return 200, b"OK\n", b"text/plain"
            if path == "/drain_listeners":
                sup.draining = True
                sup.store.server["draining"] = 1
                await sup.ask(("admin", b"POST", target), ASK_TIMEOUT)
                return 200, b"OK\n", b"text/plain"
            sup.terminate()
            return 200, b"OK\n", b"text/plain"
        if path in ("/", "/help"):
            return 200, _HELP.encode(), b"text/plain"
        return 404, b"unknown admin path; see /help\n", b"text/plain"

    def readiness(self) -> Answer:
        sup = self.supervisor
        if sup.ready and not sup.draining and sup.all_serving():
            return 200, b"LIVE\n", b"text/plain"
        return 503, b"DRAINING\n" if sup.draining else b"NOT READY\n", b"text/plain"

    async def prometheus(self) -> Answer:
        store, overload = await self._stats()
        return exposition((StatsCollector(store), OverloadCollector(overload)))

    async def _stats(self) -> tuple[Store, OverloadStats]:
        answers = await self.supervisor.ask(("stats",), ASK_TIMEOUT)
        store = merge_stores([s for _, (s, _) in answers], self.supervisor.store.server)
        store.xds = self.supervisor.store.xds  # the supervisor runs the one ADS client
        overload = OverloadStats()
        for _, (_, theirs) in answers:
            overload.add(theirs)
        return store, overload

    async def _one_worker(self, index: str, method: bytes, path: str) -> Answer:
        workers = self.supervisor.workers
        if not index.isdigit() or int(index) >= len(workers):
            return 400, f"no worker {index!r}: 0..{len(workers) - 1}\n".encode(), b"text/plain"
        for _, answer in await self.supervisor.ask(
            ("admin", method, path), ASK_TIMEOUT, [workers[int(index)]]
        ):
            return answer
        return 503, f"worker {index} is not serving\n".encode(), b"text/plain"

    def _workers(self) -> list[dict[str, Any]]:
        sup = self.supervisor
        return [
            {
                "index": w.index,
                "pid": w.pid,
                "serving": w.serving,
                "restarts": w.restarts,
                "version": None if w.applied is None else w.applied.version,
                "current": w.applied is sup.forwarded,
            }
            for w in sup.workers
        ]
