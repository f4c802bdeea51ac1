"""The envoy.filters.http.fault filter's runtime: injected delays and aborts, sans-I/O.

Owns Envoy's FaultFilter rules, per request: the route's typed_per_filter_config replaces the
filter's config; the fault applies only when upstream_cluster (if set) is the route's cluster
(a weighted route's is chosen later, by the router: never matched), the request's
x-envoy-downstream-service-node is one of downstream_nodes (if any) and every header matcher
matches. A delay comes first (``Wait``; flag ``DI``), then the abort is decided (flag ``FI``;
"fault filter abort", with ``grpc_status`` as the gRPC status of a gRPC reply). Header-controlled
faults read x-envoy-fault-delay-request (ms), x-envoy-fault-abort-request (HTTP status) or
x-envoy-fault-abort-grpc-request, and the ``-percentage`` headers, capped at the configured
percentage. A request counts once in ``fault_active_faults`` from its first fault to its end;
past max_active_faults no fault is injected (``fault_faults_overflow``). Randomness is the
context's ``rng``. Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshproxy.config.model import RouteAction
from meshproxy.hcm.filters import Hooks, Wait, route_config
from meshproxy.hcm.reply import LocalReply
from meshproxy.router.match import compile_headers_match

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

    from meshproxy.config.filter_config import Fault, Percent
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange, RequestView
    from meshproxy.hcm.filters import FilterStream
    from meshproxy.router.match import HeadersPredicate
    from meshproxy.stats import HttpStats

DELAY = b"x-envoy-fault-delay-request"
DELAY_PERCENT = b"x-envoy-fault-delay-request-percentage"
ABORT = b"x-envoy-fault-abort-request"
ABORT_GRPC = b"x-envoy-fault-abort-grpc-request"
ABORT_PERCENT = b"x-envoy-fault-abort-request-percentage"
NODE = b"x-envoy-downstream-service-node"
_BODY = b"fault filter abort"


class FaultFilter:
    __slots__ = ("config", "matchers", "name", "rng", "stats")

    def __init__(self, config: Fault, name: str, ctx: HttpContext) -> None:
        self.config = config
        self.name = name
        self.stats: HttpStats = ctx.stats
        self.rng: random.Random = ctx.rng
        # Header matchers per config (the filter's and each route's), compiled on first use;
        # bounded by the configs of this snapshot.
        self.matchers: dict[Fault, HeadersPredicate] = {}

    def request(self, stream: FilterStream, x: Exchange, now: float) -> LocalReply | Wait | None:
        state = x.filter_state
        if state is not None and self.name in state:
            return self._abort(state[self.name], stream, x)  # the delay is over (Envoy: then the abort)
        cfg: Fault = route_config(x, self.name) or self.config
        if not self._applies(cfg, stream, x):
            return None
        delay = cfg.delay
        if delay is not None:
            seconds = delay.fixed if not delay.from_header else _number(stream.headers, DELAY) / 1000.0
            if seconds > 0 and self._hit(delay.percent, delay.from_header, stream.headers, DELAY_PERCENT):
                if not self._activate(cfg, x):
                    return None
                self.stats.fault_delays_injected += 1
                stream.flags = "DI"
                return Wait(seconds)
        return self._abort(cfg, stream, x)

    def end(self, stream: RequestView, x: Exchange, now: float) -> None:
        state = x.filter_state
        if state is not None and self.name in state:
            self.stats.fault_active_faults -= 1

    def _abort(self, cfg: Fault, stream: FilterStream, x: Exchange) -> LocalReply | None:
        abort = cfg.abort
        if abort is None:
            return None
        status, grpc_status = abort.http_status, abort.grpc_status
        if abort.from_header:
            status = _number(stream.headers, ABORT)
            if not 200 <= status < 600:
                status = 0
                grpc_status = _number(stream.headers, ABORT_GRPC, None)
                if grpc_status is None:
                    return None
        if not self._hit(abort.percent, abort.from_header, stream.headers, ABORT_PERCENT):
            return None
        if not self._activate(cfg, x):
            return None
        self.stats.fault_aborts_injected += 1
        return LocalReply(status or 200, _BODY, "FI", grpc_status=grpc_status)

    def _applies(self, cfg: Fault, stream: FilterStream, x: Exchange) -> bool:
        if cfg.upstream_cluster:
            route = x.decision.route if x.decision is not None else None
            action = route.action if route is not None else None
            if type(action) is not RouteAction or action.cluster != cfg.upstream_cluster:
                return False
        if cfg.downstream_nodes:
            node = next((v for n, v in stream.headers if n == NODE), None)
            if node is None or node.decode("latin-1") not in cfg.downstream_nodes:
                return False
        if cfg.headers:
            matches = self.matchers.get(cfg)
            if matches is None:
                matches = self.matchers[cfg] = compile_headers_match(cfg.headers)
            return matches(stream.headers, stream.authority or b"", stream.url)
        return True

    def _hit(
        self, percent: Percent, from_header: bool, headers: Sequence[tuple[bytes, bytes]], name: bytes
    ) -> bool:
        numerator = percent.numerator
        if from_header:
            asked = _number(headers, name, None)
            if asked is not None:
                numerator = min(asked, numerator)
        return self.rng.random() * percent.denominator < numerator

    def _activate(self, cfg: Fault, x: Exchange) -> bool:
        """Counts this request as an active fault (once), unless max_active_faults is reached."""
        state = x.filter_state
        if state is None:
            state = x.filter_state = {}
        elif self.name in state:
            return True
        stats = self.stats
        limit = cfg.max_active_faults
        if limit is not None and stats.fault_active_faults >= limit:
            stats.fault_faults_overflow += 1
            return False
        stats.fault_active_faults += 1
        state[self.name] = cfg
        return True


def _number(headers: Sequence[tuple[bytes, bytes]], name: bytes, default: Any = 0) -> Any:
    """The header's value as a non-negative integer, or ``default`` (absent or not a number)."""
    for n, v in headers:
        if n == name:
            return int(v) if v.isdigit() else default
    return default


def fault(config: Fault, name: str, ctx: HttpContext, now: float) -> Hooks:
    """The factory (``hcm/chain.py``)."""
    f = FaultFilter(config, name, ctx)
    return Hooks(name, request=f.request, end=f.end)
