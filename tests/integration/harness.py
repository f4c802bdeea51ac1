"""Integration-test harness: Envoy bootstraps built as dicts, a proxy started in-process.

Owns the small vocabulary the integration tests share: builders for listeners, routes and
clusters in Envoy's v3 JSON shape (so every test exercises the real config compiler), and
``running_proxy``, which starts a ``Server`` on loopback port 0 and yields its addresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def http_listener(
    routes: list[dict[str, Any]] | None = None,
    *,
    name: str = "http",
    virtual_hosts: list[dict[str, Any]] | None = None,
    access_log: str | None = None,
    **hcm: Any,
) -> dict[str, Any]:
    if virtual_hosts is None:
        virtual_hosts = [{"name": "all", "domains": ["*"], "routes": routes or []}]
    cfg: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": name,
        "route_config": {"name": f"{name}_routes", "virtual_hosts": virtual_hosts},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **hcm,
    }
    if access_log:
        cfg["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_LOG, "path": access_log}}]
    return {
        "name": name,
        "address": addr("127.0.0.1", 0),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}]}],
    }


def tcp_listener(cluster: str, *, name: str = "tcp", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "address": addr("127.0.0.1", 0),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": name, "cluster": cluster, **extra},
                    }
                ]
            }
        ],
    }


def route(prefix: str = "/", cluster: str = "backend", **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster, **action}}


def cluster(name: str, *ports: int, host: str = "127.0.0.1", kind: str = "STATIC", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(host, p)}} for p in ports]}],
        },
        **extra,
    }


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], admin: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"node": {"id": "test"}, "static_resources": {"listeners": listeners, "clusters": clusters}}
    if admin:
        doc["admin"] = {"address": addr("127.0.0.1", 0)}
    return doc


@contextlib.asynccontextmanager
async def running_proxy(doc: dict[str, Any]) -> AsyncIterator[Proxy]:
    import json

    server = Server(parse_bootstrap(json.dumps(doc), source="test"))
    await server.start()
    try:
        yield Proxy(server)
    finally:
        await server.close()


class Proxy:
    def __init__(self, server: Server) -> None:
        self.server = server

    def port(self, listener: str = "http") -> int:
        return self.server.listener_address(listener)[1]

    def url(self, path: str = "/", listener: str = "http") -> str:
        return f"http://127.0.0.1:{self.port(listener)}{path}"

    @property
    def admin_url(self) -> str:
        a = self.server.admin.address()
        assert a is not None
        return f"http://127.0.0.1:{a[1]}"

    def http_stats(self, prefix: str = "http") -> Any:
        return self.server.store.http_stats(prefix)

    def cluster_stats(self, name: str = "backend") -> Any:
        return self.server.store.cluster_stats(name)
