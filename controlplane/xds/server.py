"""``envoy.service.discovery.v3.AggregatedDiscoveryService`` on grpc.aio: the I/O shell of ADS.

Owns the life of each ADS stream: reading the first request (its node picks the group), the
ledger entry, the cache watch, one reader task that feeds requests to the stream's protocol core
(`streams.SotwStream` or `streams.DeltaStream`), and one writer loop that flushes whatever the
core says is due. The cache's wake-up and every request only set the stream's event, so a burst
of snapshot changes costs each stream one flush, and a push costs each stream O(its own
subscriptions): the bytes come pre-serialised from the snapshot.

The methods are registered with a generic handler whose response serialiser is the identity:
the core returns finished response bytes (a per-stream header plus the snapshot's shared
pieces), so nothing is serialised per stream but the header.

Must not depend on: the snapshot's construction (it reads `SnapshotCache` only), policy of any
kind: every protocol decision is in `streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds.cache import SnapshotCache
from controlplane.xds.ledger import Ledger, StreamKind
from controlplane.xds.streams import DeltaStream, SotwStream

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

Core = SotwStream | DeltaStream


class AdsServer:
    """State-of-the-world and delta ADS over a `SnapshotCache`, recording into a `Ledger`."""

    def __init__(self, cache: SnapshotCache, ledger: Ledger) -> None:
        self.cache = cache
        self.ledger = ledger
        self._wakes: set[asyncio.Event] = set()  # one per open stream
        self._closing = False

    def close(self) -> None:
        """Ends every stream with UNAVAILABLE, and each new one at once: on shutdown, clients
        reconnect (to a successor) instead of holding a stream that the server's grace period
        would otherwise keep open until it expires."""
        self._closing = True
        for wake in self._wakes:
            wake.set()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def StreamAggregatedResources(
        self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(requests, context, "sotw", SotwStream)

    async def DeltaAggregatedResources(
        self,
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await self._serve(requests, context, "delta", DeltaStream)

    async def _serve(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        kind: StreamKind,
        make_core: Callable[..., Core],
    ) -> None:
        peer = context.peer()
        iterator = aiter(requests)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        node = first.node if first.HasField("node") else base_pb2.Node()
        try:
            group = self.cache.group_of(node)
        except Exception:  # a user-supplied grouping function must not take the server down
            log.exception("group_of failed for node %r at %s", node.id, peer)
            await context.abort(grpc.StatusCode.INTERNAL, "the control plane could not group this node")
        entry = self.ledger.connect(node=node, cluster=group, kind=kind, peer=peer)
        core = make_core(self.ledger, entry)
        wake = asyncio.Event()
        self._wakes.add(wake)
        if self._closing:
            wake.set()
        cancel_watch = self.cache.watch(group, wake.set)
        reader = asyncio.create_task(self._read(first, iterator, core, wake))
        reader.add_done_callback(lambda _: wake.set())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if self._closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the control plane is shutting down")
                if reader.done():
                    error = None if reader.cancelled() else reader.exception()
                    if isinstance(error, _BadRequest):
                        log.warning("ADS %s stream of %r at %s: bad request: %s", kind, node.id, peer, error)
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {error}")
                    return
                snapshot = self.cache.get(group)
                if snapshot is None:
                    continue  # nothing to serve yet; the first set_snapshot wakes us
                for response in core.responses(snapshot):
                    await context.write(response)
        finally:
            self._wakes.discard(wake)
            cancel_watch()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.ledger.disconnect(entry)

    @staticmethod
    async def _read(first: Any, iterator: AsyncIterator[Any], core: Core, wake: asyncio.Event) -> None:
        request = first
        while True:
            try:
                core.receive(request)
            except Exception as exc:  # the core trusts protobuf; anything it trips on is the peer's
                log.debug("request %s", request, exc_info=True)
                raise _BadRequest(f"{type(exc).__name__}: {exc}") from exc
            wake.set()
            try:
                request = await anext(iterator)
            except StopAsyncIteration:
                return


class _BadRequest(Exception):
    """A request the protocol core could not process."""


def add_to_server(ads: AdsServer, server: grpc.aio.Server) -> None:
    """Registers ``ads`` on ``server`` (as `controlplane.ca_service.add_to_server` does the CA)."""
    ads.add_to_server(server)
