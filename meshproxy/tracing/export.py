"""The OTLP/gRPC exporter: finished spans leave the process on a task of their own.

Owns ``Exporter`` (one per tracing configuration, see ``registry.py``): a ``SpanQueue`` drained
by one asyncio task that batches spans into an ``ExportTraceServiceRequest`` and calls the
collector's TraceService over grpc.aio. The collector is a cluster: each export picks one of
its hosts, as a request would, and talks plaintext gRPC to it (a collector cluster with a
transport socket is refused at export time, logged and counted). The task sleeps until a span
arrives, then waits ``BATCH_WINDOW`` to gather more, so spans go out in batches without a
timer running while nothing is traced. A failed or timed-out call drops its batch
(``otel_export_failures``, ``otel_spans_dropped``): nothing is retried and nothing waits on
the request path. OTLP messages are built here only (the edge, DESIGN decision 1).
Must not be imported by the request path's modules (``tracer.py`` is what they see).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshproxy.tracing.tracer import FinishedSpan, SpanQueue

if TYPE_CHECKING:
    from meshproxy.config.model import Tracing
    from meshproxy.stats import TracingStats
    from meshproxy.upstream.manager import ClusterManager

log = logging.getLogger("meshproxy.tracing")

BATCH_WINDOW = 0.2  # seconds a woken exporter gathers spans before it sends them
EXPORT_TIMEOUT = 5.0  # an export call's bound when grpc_service.timeout is not set
CLOSE_TIMEOUT = 1.0  # the last call's bound when the proxy stops
SCOPE = common_pb2.InstrumentationScope(name="meshproxy")


class Exporter:
    def __init__(self, config: Tracing, clusters: ClusterManager, stats: TracingStats) -> None:
        self.config = config
        self.stats = stats
        self._clusters = clusters
        self._wake = asyncio.Event()
        self.queue = SpanQueue(config.max_cache_size, stats, self._wake.set)
        self._channel: grpc.aio.Channel | None = None
        self._target = ""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_WINDOW)
            self._wake.clear()
            while self.queue.spans:
                await self._send(self.queue.take(), self.config.timeout or EXPORT_TIMEOUT)

    async def _send(self, batch: list[FinishedSpan], timeout: float) -> None:
        """One Export call; every span of ``batch`` ends up sent or dropped (even if cancelled)."""
        stats = self.stats
        stub = await self._stub()
        if stub is None:
            stats.otel_export_failures += 1
            stats.otel_spans_dropped += len(batch)
            return
        try:
            await stub.Export(encode(batch, self.config.service_name), timeout=timeout)
        except asyncio.CancelledError:
            stats.otel_spans_dropped += len(batch)
            raise
        except grpc.aio.AioRpcError as exc:
            stats.otel_export_failures += 1
            stats.otel_spans_dropped += len(batch)
            log.debug("tracing: export to %s failed: %s", self._target, exc.code().name)
            return
        stats.otel_spans_sent += len(batch)

    async def _stub(self) -> trace_service_pb2_grpc.TraceServiceStub | None:
        """A stub on a channel to one of the collector cluster's hosts (kept while it is picked)."""
        cluster = self._clusters.get(self.config.collector)
        if cluster is None or cluster.tls is not None:
            why = "gone" if cluster is None else "TLS (only plaintext OTLP/gRPC is supported)"
            log.warning("tracing: collector cluster %s is %s", self.config.collector, why)
            return None
        host = cluster.pick()
        if host is None:
            return None
        address = host.address
        target = (
            f"[{address.host}]:{address.port}" if ":" in address.host else f"{address.host}:{address.port}"
        )
        if target != self._target or self._channel is None:
            if self._channel is not None:
                await self._channel.close()
            options = [("grpc.default_authority", self.config.authority or self.config.collector)]
            self._channel = grpc.aio.insecure_channel(target, options=options)
            self._target = target
        return trace_service_pb2_grpc.TraceServiceStub(self._channel)

    async def close(self) -> None:
        """Stop; what is still queued goes out in one last call bounded by ``CLOSE_TIMEOUT``."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self.queue.spans:
            await self._send(self.queue.take(), min(CLOSE_TIMEOUT, self.config.timeout or CLOSE_TIMEOUT))
        if self._channel is not None:
            await self._channel.close()


def encode(batch: list[FinishedSpan], service_name: str) -> trace_service_pb2.ExportTraceServiceRequest:
    """One ExportTraceServiceRequest: one resource (service.name), one scope, the spans."""
    resource = resource_pb2.Resource(
        attributes=[_attribute("service.name", service_name or "unknown_service:meshproxy")]
    )
    spans = [
        trace_pb2.Span(
            trace_id=s.trace_id.to_bytes(16, "big"),
            span_id=s.span_id.to_bytes(8, "big"),
            parent_span_id=s.parent_id.to_bytes(8, "big") if s.parent_id else b"",
            trace_state=s.tracestate,
            name=s.name,
            kind=s.kind,  # type: ignore[arg-type]  # the SpanKind numbers
            start_time_unix_nano=s.start_ns,
            end_time_unix_nano=s.end_ns,
            attributes=[_attribute(k, v) for k, v in s.attributes],
            flags=0x301 if s.parent_id else 0x101,  # sampled, HAS_IS_REMOTE (+ IS_REMOTE: a remote parent)
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR if s.error else 0),  # type: ignore[arg-type]
        )
        for s in batch
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=SCOPE, spans=spans)]
            )
        ]
    )


def _attribute(key: str, value: str | int) -> common_pb2.KeyValue:
    any_value = (
        common_pb2.AnyValue(int_value=value)
        if isinstance(value, int)
        else common_pb2.AnyValue(string_value=value)
    )
    return common_pb2.KeyValue(key=key, value=any_value)
