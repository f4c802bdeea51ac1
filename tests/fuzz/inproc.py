"""The proxy in one process without sockets: a real listener, real codecs, fake transports.

Owns ``InProcessProxy``: a ``ListenerRuntime`` and ``ClusterManager`` built from a real bootstrap
(so the real compiler, route table and HCM run), whose downstream connections are fed bytes
through an in-memory transport, and whose cluster "backend" opens in-memory upstream connections
instead of sockets. The in-memory upstream is a strict HTTP/1.1 server (``rfc9112``): it frames
what the proxy sent it, records every request, and answers each complete one, either with a fixed
well-formed response or with bytes the fuzz target supplies. One event loop (stdlib asyncio: the
fuzzers want determinism) runs for the whole process; each input runs until the loop is quiet,
then every connection is torn down, so no state carries from one input to the next.

Seam used: ``ClusterRuntime.open_connection`` is replaced on the one cluster instance (the rest of
the connection path, ``acquire``/``release``/pooling, runs as in production). Must not be imported
by the product.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from meshproxy.access_log import AccessLogs
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.hcm.context import HttpContext
from meshproxy.http.downstream import DownstreamConnection
from meshproxy.http2.downstream import H2Downstream
from meshproxy.listener.admission import Admission, FdReserve
from meshproxy.listener.runtime import ListenerRuntime
from meshproxy.overload.runtime import OverloadRuntime
from meshproxy.stats import Store
from meshproxy.upstream.manager import ClusterManager
from tests.fuzz import rfc9112

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
# Rounds of the loop without a byte moving before an input counts as settled.
_QUIET_ROUNDS = 3
# Loop rounds one input may take; more is a hang (a busy loop between the proxy and us).
MAX_ROUNDS = 2000

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _bootstrap() -> str:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 9}}
    hcm = {
        "@type": _HCM,
        "stat_prefix": "fuzz",
        "route_config": {
            "name": "fuzz",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/admin"}, "direct_response": {"status": 403}},
                        {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    doc = {
        "node": {"id": "fuzz"},
        "static_resources": {
            "listeners": [
                {
                    "name": "fuzz",
                    "address": address,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                    },
                }
            ],
        },
    }
    return json.dumps(doc)


class MemoryTransport(asyncio.Transport):
    """An in-memory stream transport: writes are recorded, close/abort end the protocol soon."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._loop = loop
        self._on_write = on_write
        self.protocol: asyncio.BaseProtocol | None = None
        self.closing = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self._on_write(bytes(data))

    def close(self) -> None:
        self._end()

    def abort(self) -> None:
        self.aborted = True
        self._end()

    def _end(self) -> None:
        if not self.closing:
            self.closing = True
            if self.protocol is not None:
                self._loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 40000), "sockname": ("127.0.0.1", 15001)}.get(name, default)

    def can_write_eof(self) -> bool:
        return False


class Upstream:
    """One in-memory upstream connection: a strict HTTP/1.1 server behind the proxy."""

    def __init__(self, run: Run, proto: asyncio.Protocol) -> None:
        self.run = run
        self.proto = proto
        self.received = b""
        self.answered = 0
        self.transport = MemoryTransport(run.loop, self._received)
        self.transport.protocol = proto

    def _received(self, data: bytes) -> None:
        self.received += data
        self.run.moved += 1
        self.run.loop.call_soon(self._serve)

    def framing(self) -> rfc9112.Framing:
        return rfc9112.parse_requests(self.received, declined_upgrades=True)

    def _serve(self) -> None:
        if self.transport.closing:
            return
        done = self.framing().messages
        for msg in done[self.answered :]:
            self.answered += 1
            self.run.upstream_requests.append(msg)
            self.proto.data_received(self.run.respond(msg))
            if self.transport.closing:
                return


class Run:
    """One input's connections and what crossed them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, responses: list[bytes]) -> None:
        self.loop = loop
        self.responses = responses  # answers to the first upstream requests; then OK_RESPONSE
        self.upstreams: list[Upstream] = []
        self.upstream_requests: list[rfc9112.Message] = []
        self.downstream = b""
        self.moved = 0
        self.transport: MemoryTransport | None = None

    def respond(self, msg: rfc9112.Message) -> bytes:
        return self.responses.pop(0) if self.responses else OK_RESPONSE

    def wrote_down(self, data: bytes) -> None:
        self.downstream += data
        self.moved += 1


class InProcessProxy:
    """The real proxy's listener and cluster, driven without sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._build())
        self.run: Run | None = None

    async def _build(self) -> None:
        config = parse_bootstrap(_bootstrap(), source="fuzz")
        rng = random.Random(12)
        store = Store()
        self.clusters = ClusterManager(store, rng)
        await self.clusters.update(config.clusters)
        (lc,) = config.listeners
        # Admission without limits: no overload manager, no descriptor reserve.
        admission = Admission(OverloadRuntime(None), FdReserve(None, lambda: 0), rng)
        self.listener = ListenerRuntime(
            lc, store.listener_stats(lc.name), store, self.clusters, AccessLogs(), rng, admission
        )
        (ctx,) = self.listener.contexts.values()
        assert isinstance(ctx, HttpContext)
        self.ctx = ctx
        backend = self.clusters.get("backend")
        assert backend is not None
        self.backend = backend
        backend.open_connection = self._open_connection  # type: ignore[method-assign]

    def _open_connection(
        self, host: Any, factory: Callable[[], asyncio.Protocol], rm: Any = None
    ) -> asyncio.Future[Any]:
        run = self.run
        assert run is not None
        self.backend.stats.upstream_cx_total += 1
        self.backend.connection_opened(rm)
        proto = factory()
        upstream = Upstream(run, proto)
        run.upstreams.append(upstream)
        proto.connection_made(upstream.transport)
        future: asyncio.Future[Any] = self.loop.create_future()
        future.set_result(proto)
        return future

    def http1(self, data: bytes, responses: list[bytes] | None = None, *, eof: bool = False) -> Run:
        """``data`` from one HTTP/1.1 client connection; the upstream answers with ``responses``."""
        return self.loop.run_until_complete(self._one(DownstreamConnection, data, responses or [], eof))

    def http2(self, data: bytes) -> Run:
        """``data`` after the client preface on one cleartext HTTP/2 connection."""
        return self.loop.run_until_complete(self._one(H2Downstream, H2_PREFACE + data, [], False))

    async def _one(
        self, kind: Callable[[HttpContext], asyncio.Protocol], data: bytes, responses: list[bytes], eof: bool
    ) -> Run:
        run = self.run = Run(self.loop, responses)
        proto = kind(self.ctx)
        transport = run.transport = MemoryTransport(self.loop, run.wrote_down)
        transport.protocol = proto
        proto.connection_made(transport)
        if data:
            proto.data_received(data)
        if eof and not transport.closing and proto.eof_received() is not True:
            transport.close()
        await self._settle(run)
        if not transport.closing:
            transport.close()
        for upstream in run.upstreams:
            upstream.transport.close()
        await self._settle(run)
        self.backend.close_idle()
        await self._settle(run)
        self.run = None
        return run

    async def _settle(self, run: Run) -> None:
        quiet = 0
        for _ in range(MAX_ROUNDS):
            moved = run.moved
            await asyncio.sleep(0)
            quiet = quiet + 1 if run.moved == moved else 0
            if quiet >= _QUIET_ROUNDS:
                return
        raise Hang(f"bytes still moving after {MAX_ROUNDS} loop rounds")


class Hang(Exception):
    """An input kept the proxy busy without end."""
