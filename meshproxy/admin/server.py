"""The admin HTTP endpoint (Envoy's admin interface, default 127.0.0.1:15000).

Owns the operator's view of a running proxy: readiness, Prometheus stats, the config dump,
cluster membership with per-host counters, the overload manager's stats, draining and
quitting. It is a small HTTP/1.1 server of its own (``endpoint.py``: bounded, one request per
connection turn) so it keeps answering while the data plane drains or is overloaded. Its
readiness and Prometheus answers are the ones the status ports give (``status.py``). Must never
sit on the request path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meshproxy.addresses import host_port
from meshproxy.admin.endpoint import Answer, Endpoint, json_answer, method_not_allowed
from meshproxy.admin.prometheus import exposition
from meshproxy.admin.server_info import server_info
from meshproxy.admin.stats_format import QueryError, StatsQuery
from meshproxy.overload.stats import OverloadCollector
from meshproxy.stats import StatsCollector
from meshproxy.telemetry.istio import IstioCollector
from meshproxy.tls.inventory import InventoryCollector

if TYPE_CHECKING:
    from meshproxy.config.model import Config
    from meshproxy.server import Server
    from meshproxy.upstream.cluster import ClusterRuntime
    from meshproxy.xds.client import AdsClient

HELP = """meshproxy admin
  GET  /ready              200 when serving (with xDS: once a first complete config is applied), 503 otherwise
  GET  /stats/prometheus   counters, gauges and histograms (Prometheus text format)
  GET  /stats              the same in Envoy's text format (histograms as quantile summaries);
                           ?filter=RE2 (searched in the name), ?usedonly, ?type=Counters|Gauges|Histograms;
                           ?format=json: Envoy's JSON; ?format=prometheus: as /stats/prometheus;
                           ?format=flat: meshproxy's flat JSON map (histograms with their buckets)
  GET  /config_dump        the configuration as Envoy's ConfigDump JSON (?include_eds, ?resource=,
                           ?name_regex=); ?format=compiled: meshproxy's compiled form (with xDS:
                           versions, warming, last NACKs)
  GET  /clusters           clusters, their hosts and per-host state
  GET  /listeners          listeners and their bound addresses
  GET  /crypto_inventory   per peer SPIFFE ID: the TLS groups, signature algorithms and versions its
                           connections negotiated (both directions), first/last seen, classical fallbacks
  GET  /certs              certificates in use (listeners' and clusters' TLS) with their expiry
  GET  /server_info        Envoy's ServerInfo JSON: version, state, uptime, command line options, node;
                           ?format=meshproxy: version, state, uptime, Python, event loop, OpenSSL,
                           the HTTP/2 codec and the compiled extensions (as `meshproxy version --json`)
  POST /drain_listeners    stop accepting, drain in-flight requests (the process stays up);
                           ?inboundonly: only listeners whose traffic_direction is not OUTBOUND;
                           ?graceful: first keep accepting in drain mode until traffic stops
  POST /healthcheck/fail   health_check filters answer 503 (until /healthcheck/ok)
  POST /healthcheck/ok     health_check filters answer 200 again
  POST /quitquitquit       shut down as on SIGTERM (inbound drains, outbound serves until the
                           application has gone, then drains), then exit
"""


def envoy_config_dump(config: Config, xds: AdsClient | None, query: str, started: float) -> Answer:
    """``/config_dump``: Envoy's ConfigDump (``config_dump.py``); ``started``: monotonic time the
    admin started (the static configuration's load time)."""
    from meshproxy.admin.config_dump import config_dump
    from meshproxy.config.regex import RegexError

    loaded = time.time() - (time.monotonic() - started)
    try:
        return json_answer(config_dump(config, xds, urllib.parse.unquote(query), loaded))
    except RegexError as err:
        return 400, f"name_regex: {err}\n".encode(), b"text/plain"


def jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in ("pattern", "bootstrap")
        }
    if isinstance(obj, (tuple, list)):
        return [jsonable(x) for x in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


class Admin:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.collectors = (
            StatsCollector(server.store),
            OverloadCollector(server.overload.stats),
            InventoryCollector(server.store.inventory),
            IstioCollector(server.istio),
        )
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

    # ------------------------------------------------------------------ handlers

    def handle(self, method: bytes, path: str) -> Answer:
        path, _, query = path.partition("?")
        srv = self.server
        if path == "/ready":
            return self.readiness()
        if path == "/stats/prometheus":
            return self.prometheus()
        if path == "/stats":
            try:
                stats = StatsQuery.parse(query)
            except QueryError as err:
                return 400, f"{err}\n".encode(), b"text/plain"
            if stats.format == "prometheus":
                return self.prometheus()
            return stats.answer(srv.store, srv.overload.stats)
        if path == "/config_dump":
            if "format=compiled" not in query.split("&"):
                return envoy_config_dump(srv.config, srv.xds, query, self.started)
            dump = {"version": srv.config.version, "config": jsonable(srv.config)}
            if srv.xds is not None:
                dump["xds"] = srv.xds.status()
            return json_answer(dump)
        if path == "/clusters":
            return json_answer(self._clusters_json())
        if path == "/listeners":
            return json_answer(
                [
                    {"name": name, "address": host_port(*lr.bound_address()), "draining": lr.draining}
                    for name, lr in srv.listeners.items()
                    if lr.server is not None
                ]
            )
        if path == "/crypto_inventory":
            return json_answer(srv.store.inventory.as_json())
        if path == "/certs":
            return json_answer(self._certs_json())
        if path == "/server_info":
            return json_answer(
                server_info(
                    srv.config,
                    ready=srv.ready,
                    draining=srv.draining,
                    started=self.started,
                    concurrency=1,
                    query=query,
                )
            )
        if path in ("/drain_listeners", "/quitquitquit", "/healthcheck/fail", "/healthcheck/ok"):
            if method != b"POST":
                return method_not_allowed(b"POST")
            if path.startswith("/healthcheck/"):
                srv.fail_health_checks(path == "/healthcheck/fail")
                return 200, b"OK\n", b"text/plain"
            if path == "/drain_listeners":
                params = query.split("&")
                srv.spawn(srv.drain(inbound_only="inboundonly" in params, graceful="graceful" in params))
                return 200, b"OK\n", b"text/plain"
            srv.terminate()
            return 200, b"OK\n", b"text/plain"
        if path in ("/", "/help"):
            return 200, HELP.encode(), b"text/plain"
        return 404, b"unknown admin path; see /help\n", b"text/plain"

    def readiness(self) -> Answer:
        """200 once the first complete configuration is applied (its certificates were obtained
        before it compiled) and until a drain begins (SIGTERM: the kubelet stops sending); else 503."""
        srv = self.server
        if srv.ready and not srv.draining:
            return 200, b"LIVE\n", b"text/plain"
        return 503, b"DRAINING\n" if srv.draining else b"NOT READY\n", b"text/plain"

    def prometheus(self) -> Answer:
        return exposition(self.collectors)

    def _certs_json(self) -> list[dict[str, Any]]:
        """Envoy's /certs: per TLS context, its certificate chain and trust anchors."""
        out = []
        for name, lr in self.server.listeners.items():
            default = lr.config.default_filter_chain
            for chain in lr.config.filter_chains + ((default,) if default is not None else ()):
                live = lr.tls_contexts.get(id(chain))  # after a rotation, the rotated material
                if live is not None:
                    out.append({"listener": name, "filter_chain": chain.name, **_describe(live.cfg)})
        for name, rt in self.server.clusters.clusters.items():
            if rt.tls is not None:
                out.append({"cluster": name, **_describe(rt.tls.cfg)})
        return out

    def _clusters_json(self) -> list[dict[str, Any]]:
        return [_cluster_json(name, rt) for name, rt in self.server.clusters.clusters.items()]


def _oid_name(oid: Any) -> str:
    return str(getattr(oid, "_name", None) or oid.dotted_string)


def _describe(tls: Any) -> dict[str, Any]:
    from cryptography import x509

    from meshproxy.tls.engine import uri_sans

    def certs(pem: bytes | None) -> list[dict[str, Any]]:
        if not pem:
            return []
        now = datetime.now(UTC)
        return [
            {
                "subject": c.subject.rfc4514_string(),
                "uri_sans": list(uri_sans(c)),
                "serial_number": format(c.serial_number, "x"),
                "signature_algorithm": getattr(
                    c.signature_algorithm_oid, "_name", c.signature_algorithm_oid.dotted_string
                ),
                "valid_from": c.not_valid_before_utc.isoformat(),
                "expiration_time": c.not_valid_after_utc.isoformat(),
                "seconds_until_expiration": int((c.not_valid_after_utc - now).total_seconds()),
            }
            for c in x509.load_pem_x509_certificates(pem)
        ]

    return {
        "pq_policy": str(tls.pq_policy.mode),
        "groups": list(tls.pq_policy.groups),
        "cert_chain": certs(tls.certificate_chain),
        "ca_cert": certs(tls.trusted_ca),
    }


def _cluster_json(name: str, rt: ClusterRuntime) -> dict[str, Any]:
    """Envoy's /clusters for one cluster: counters, breakers, priority loads, and per host its
    availability and why (EDS health, active health checks, outlier ejection)."""
    s = rt.stats
    selector = rt.selector
    checker = rt.health
    outlier = rt.outlier
    hosts = []
    for h in rt.hosts:
        entry: dict[str, Any] = {
            "address": h.label,
            "weight": h.weight,
            "priority": h.priority,
            "locality": {
                "region": h.locality.region,
                "zone": h.locality.zone,
                "sub_zone": h.locality.sub_zone,
            },
            "health_status": h.health_status,
            "available": h.available,
            "rq_total": h.rq_total,
            "rq_active": h.rq_active,
            "cx_active": h.cx_active,
            "cx_idle": len(h.idle),
        }
        if checker is not None:
            entry["active_health_check"] = checker.status(h.label)
            entry["health_check_results"] = [
                None if r is None else {"ok": r.ok, "detail": r.detail} for r in checker.last_results(h.label)
            ]
        if outlier is not None:
            entry["ejected"] = h.ejected
            entry["num_ejections"] = outlier.num_ejections(h.key)
        hosts.append(entry)
    return {
        "name": name,
        "type": rt.config.discovery,
        "lb_policy": rt.config.lb.policy,
        "resolved": rt.resolved,
        "upstream_rq_total": s.upstream_rq_total,
        "upstream_rq_active": s.upstream_rq_active,
        "upstream_cx_active": s.upstream_cx_active,
        "upstream_cx_connect_fail": s.upstream_cx_connect_fail,
        "circuit_breakers": rt.breakers.gauges(),
        "priority_load": list(selector.priority_load) if selector is not None else [],
        "panic": list(selector.panic) if selector is not None else [],
        "outlier_detection": dict(outlier.stats.items()) if outlier is not None else None,
        "hosts": hosts,
    }
