"""The set of clusters the proxy knows, kept across configuration swaps.

Owns cluster lifecycle: creating runtimes for new clusters, updating changed ones while keeping
their hosts' pools and counters (state carries over by cluster name and endpoint address),
resolving STRICT_DNS and LOGICAL_DNS clusters periodically, giving ORIGINAL_DST clusters their on-demand host
table (``original_dst.py``), and sweeping idle pooled connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import time

from meshproxy.config.model import Cluster, SocketAddress
from meshproxy.stats import Store
from meshproxy.upstream.cluster import ClusterRuntime, Host, endpoint_hosts
from meshproxy.upstream.original_dst import OriginalDstHosts

log = logging.getLogger("meshproxy.upstream")

SWEEP_INTERVAL = 1.0
# Longest stretch ``update`` runs without yielding to the event loop (seconds).
SLICE = 0.005


_FAMILY = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}  # others: AF_UNSPEC (0)


def lookup_family_addresses(addresses: list[str], family: str) -> list[str]:
    """The distinct resolved ``addresses`` (in the resolver's order) a cluster's
    ``dns_lookup_family`` keeps: AUTO the IPv6 ones if any, else the IPv4 ones; V4_PREFERRED the
    other way round; ALL (and the *_ONLY families, already asked of the resolver) every one."""
    unique = list(dict.fromkeys(addresses))
    if family not in ("AUTO", "V4_PREFERRED"):
        return unique
    v6 = [a for a in unique if ":" in a]
    v4 = [a for a in unique if ":" not in a]
    first, second = (v6, v4) if family == "AUTO" else (v4, v6)
    return first or second


def _only_endpoints_differ(old: Cluster, new: Cluster) -> bool:
    """An EDS update: the same cluster but for its localities and overprovisioning factor."""
    if old.discovery != "EDS" or new.discovery != "EDS":
        return False
    lb = dataclasses.replace(old.lb, overprovisioning_factor=new.lb.overprovisioning_factor)
    return dataclasses.replace(old, localities=new.localities, lb=lb) == new


class ClusterManager:
    def __init__(self, store: Store, rng: random.Random | None = None) -> None:
        self.store = store
        self.rng = rng or random.Random()
        self.clusters: dict[str, ClusterRuntime] = {}
        self._dns_tasks: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._slice_started = 0.0  # when ``update`` last yielded to the event loop

    def get(self, name: str) -> ClusterRuntime | None:
        return self.clusters.get(name)

    async def update(self, clusters: tuple[Cluster, ...], *, initial_dns_timeout: float = 10.0) -> None:
        """Install a new cluster set; waits (bounded) for the first resolution of new DNS clusters.

        The new set is built aside and installed with one assignment; building yields to the
        loop every ``SLICE`` seconds, so a thousand clusters do not stall traffic. A cluster
        whose only change is its endpoints (EDS) keeps its runtime and gets ``set_hosts``.
        """
        fresh: dict[str, ClusterRuntime] = {}
        waiting: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        self._slice_started = time.perf_counter()
        for cfg in clusters:
            await self._pause_if_due()
            old = self.clusters.get(cfg.name)
            if old is not None and (old.config is cfg or old.config == cfg):
                fresh[cfg.name] = old
                continue
            if old is not None and _only_endpoints_differ(old.config, cfg):
                endpoints = await self._endpoint_hosts(cfg)
                old.config = cfg
                old.set_hosts(endpoints)  # hosts keep their state by address
                fresh[cfg.name] = old
                continue
            # Built before anything changes: the old runtime serves while this yields.
            hosts = await self._endpoint_hosts(cfg) if cfg.discovery in ("STATIC", "EDS") else None
            self._stop_dns(cfg.name)
            rt = ClusterRuntime(cfg, self.store.cluster_stats(cfg.name), self.rng, self.store.inventory)
            if old is not None:
                rt.inherit(old)  # pools, breaker counts, ejections and health carry over
            if cfg.original_dst is not None:  # hosts come from connections (original_dst.py)
                rt.original_dst = OriginalDstHosts(rt, cfg.original_dst)
                rt.resolved = True
            elif hosts is not None:
                rt.set_hosts(hosts)
                rt.resolved = True
            else:
                rt.set_hosts(list(rt.hosts))
                ready: asyncio.Future[None] = loop.create_future()
                waiting.append(ready)
                self._dns_tasks[cfg.name] = loop.create_task(self._dns_loop(rt, ready))
            fresh[cfg.name] = rt
        for name, rt in self.clusters.items():
            if name not in fresh:
                self._stop_dns(name)
                rt.retire()
        self.clusters = fresh
        if waiting:
            done, _ = await asyncio.wait(waiting, timeout=initial_dns_timeout)
            if len(done) != len(waiting):
                log.warning("DNS: some STRICT_DNS clusters had no answer within %.0fs", initial_dns_timeout)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def _pause_if_due(self) -> None:
        """Yields to the event loop once ``update`` has run ``SLICE`` without doing so."""
        if time.perf_counter() - self._slice_started > SLICE:
            await asyncio.sleep(0)
            self._slice_started = time.perf_counter()

    async def _endpoint_hosts(self, cfg: Cluster) -> list[Host]:
        """The hosts of ``cfg``'s endpoints, built in slices: a cluster may have thousands."""
        hosts = []
        for host in endpoint_hosts(cfg):
            hosts.append(host)
            if len(hosts) % 256 == 0:
                await self._pause_if_due()
        return hosts

    def _stop_dns(self, name: str) -> None:
        task = self._dns_tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def _resolve(self, rt: ClusterRuntime) -> list[Host] | None:
        """The hosts of every endpoint's name (Envoy's STRICT_DNS: each address
        ``dns_lookup_family`` keeps; LOGICAL_DNS: the first of them); None when nothing resolved."""
        loop = asyncio.get_running_loop()
        cfg = rt.config
        hosts: list[Host] = []
        failed = False
        for loc in cfg.localities:
            for ep in loc.endpoints:
                try:
                    infos = await loop.getaddrinfo(
                        ep.address.host,
                        ep.address.port,
                        family=_FAMILY.get(cfg.dns_lookup_family, socket.AF_UNSPEC),
                        type=socket.SOCK_STREAM,
                    )
                except OSError as exc:
                    failed = True
                    log.warning("DNS: cluster %s: cannot resolve %s: %s", cfg.name, ep.address.host, exc)
                    continue
                ips = lookup_family_addresses([str(info[4][0]) for info in infos], cfg.dns_lookup_family)
                for ip in ips[:1] if cfg.discovery == "LOGICAL_DNS" else ips:
                    hosts.append(
                        Host(
                            SocketAddress(ip, ep.address.port),
                            ep.weight,
                            ep.health_status,
                            loc.priority,
                            loc.locality,
                            loc.weight,
                            ep.hostname,
                        )
                    )
        return None if failed and not hosts else hosts

    async def _dns_loop(self, rt: ClusterRuntime, ready: asyncio.Future[None]) -> None:
        while True:
            hosts = await self._resolve(rt)
            if hosts is None:
                rt.stats.update_failure += 1  # keep the last good host set
            else:
                rt.set_hosts(hosts)
                rt.stats.update_success += 1
            rt.resolved = True
            if not ready.done():
                ready.set_result(None)
            await asyncio.sleep(rt.config.dns_refresh_rate)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for rt in self.clusters.values():
                rt.sweep_idle(now)

    async def close(self) -> None:
        for name in list(self._dns_tasks):
            self._stop_dns(name)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for rt in self.clusters.values():
            await rt.aclose()
