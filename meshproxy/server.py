"""The proxy process: one compiled configuration brought to life, and its orderly end.

Owns startup order (clusters first so listeners never route to nothing, then listeners, then
admin and readiness), the periodic housekeeping tick (idle sweeps, access-log flushes), and
shutdown: drain on SIGTERM (stop accepting, let in-flight requests finish within the drain
timeout, ``Connection: close`` on keep-alive responses meanwhile), then exit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Coroutine
from typing import Any

from meshproxy.access_log import AccessLogs
from meshproxy.admin.server import Admin
from meshproxy.config.model import Config, HttpConnectionManager, TlsFiles
from meshproxy.identity.source import CertMaterial, FileCertSource
from meshproxy.listener.runtime import ListenerRuntime
from meshproxy.stats import Store
from meshproxy.upstream.manager import ClusterManager

log = logging.getLogger("meshproxy")

TICK = 1.0


class Server:
    def __init__(self, config: Config, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.store = Store()
        self.clusters = ClusterManager(self.store, self.rng)
        self.access_logs = AccessLogs()
        self.listeners: dict[str, ListenerRuntime] = {}
        self.admin = Admin(self)
        self.ready = False
        self.draining = False
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.cert_sources: dict[TlsFiles, FileCertSource] = {}

    async def start(self) -> None:
        """Bring the configuration up; raises OSError if an address cannot be bound."""
        await self.clusters.update(self.config.clusters)
        try:
            for lc in self.config.listeners:
                lr = ListenerRuntime(
                    lc,
                    self.store.listener_stats(lc.name),
                    self.store,
                    self.clusters,
                    self.access_logs,
                    self.rng,
                )
                await lr.start()
                self.listeners[lc.name] = lr
            admin = self.config.admin.address
            if admin is not None:
                await self.admin.start(admin.host, admin.port)
        except OSError:
            await self.close()
            raise
        self._watch_certificates()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self.ready = True
        self.store.server["live"] = 1

    def _watch_certificates(self) -> None:
        """Certificate files (the way cert-manager or SPIRE mount them) are polled on the
        housekeeping tick; a change rotates every TLS context built from them."""
        for lr in self.listeners.values():
            for chain in lr.config.filter_chains:
                if chain.tls_files is not None:
                    self._source(chain.tls_files).subscribe(
                        lambda m, lr=lr, chain=chain: lr.rotate(chain, m.chain_pem, m.key_pem, m.bundle_pem)
                    )
        for cfg in self.config.clusters:
            if cfg.tls_files is not None:
                self._source(cfg.tls_files).subscribe(lambda m, name=cfg.name: self._rotate_cluster(name, m))

    def _source(self, files: TlsFiles) -> FileCertSource:
        source = self.cert_sources.get(files)
        if source is None:
            source = FileCertSource(files.certificate_chain, files.private_key, files.trusted_ca)
            self.cert_sources[files] = source
        return source

    def _rotate_cluster(self, name: str, material: CertMaterial) -> None:
        rt = self.clusters.get(name)
        if rt is not None:
            rt.rotate(material.chain_pem, material.key_pem, material.bundle_pem)

    def listener_address(self, name: str) -> tuple[str, int]:
        return self.listeners[name].bound_address()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            for lr in self.listeners.values():
                lr.sweep(now)
            self.access_logs.flush()
            for source in self.cert_sources.values():
                source.poll(time.monotonic())

    async def drain(self, timeout: float | None = None) -> int:
        """Drain every listener; returns the number of connections cut at the deadline."""
        if self.draining:
            return 0
        self.draining = True
        self.store.server["draining"] = 1
        if timeout is None:
            # The longest http_connection_manager drain_timeout (Envoy's default: 5 s).
            timeout = max(
                (
                    fc.filter.drain_timeout
                    for lr in self.listeners.values()
                    for fc in lr.config.filter_chains
                    if isinstance(fc.filter, HttpConnectionManager)
                ),
                default=5.0,
            )
        log.info("draining listeners (up to %.1fs)", timeout)
        results = await asyncio.gather(*(lr.drain(timeout) for lr in self.listeners.values()))
        cut = sum(results)
        log.info("drained; %d connection(s) cut at the deadline", cut)
        return cut

    async def shutdown(self) -> None:
        await self.drain()
        await self.close()

    async def close(self) -> None:
        self.ready = False
        self.store.server["live"] = 0
        for lr in self.listeners.values():
            lr.close()
            for conn in list(lr.connections):
                conn.abort()
        self.admin.close()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.clusters.close()
        self.access_logs.close()
        self.stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (drain, then exit) or /quitquitquit."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: self.spawn(self.shutdown()))
        await self.stopped.wait()
