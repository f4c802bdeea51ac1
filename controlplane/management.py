"""The ``meshproxy.mesh.v1.MeshManagement`` gRPC service over `ControlPlane` and the `Ledger`.

Owns the wire side of the management API: the bearer-token check on every call (tokens of the
``--management-tokens`` file, `controlplane.tokens` format; the grant's identity names the
operator in the log), the protobuf messages in and out, and the event stream, which merges the
ledger's xDS events with the config events into one bounded queue per watcher (a watcher that
falls behind loses the oldest events instead of growing memory). It holds no policy: what is
valid and what is served is `ControlPlane`'s business.

Must not depend on: the CA, files other than the tokens file (through `TokensFile`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

import grpc

from controlplane.app import ConfigEvent, ControlPlane, Outcome
from controlplane.inventory import InventoryReports
from controlplane.tokens import Grant, TokensFile
from controlplane.xds import Event, Ledger, Resources
from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 10_000
_BEARER = "bearer "


class ManagementService(pb_grpc.MeshManagementServicer):
    def __init__(
        self,
        control: ControlPlane,
        ledger: Ledger,
        tokens: TokensFile,
        inventory: InventoryReports | None = None,
    ) -> None:
        self._control = control
        self._ledger = ledger
        self._tokens = tokens
        self._inventory = inventory or InventoryReports()  # the sidecars' reports (inventory.py)

    async def _authorise(self, context: grpc.aio.ServicerContext, what: str) -> Grant:
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
        if not header.lower().startswith(_BEARER):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing 'authorization: Bearer <token>' metadata (meshctl: --token-file, $MESHCTL_TOKEN, "
                "or the state directory's meshctl.token on the controlplane's machine)",
            )
        grant = self._tokens.table().lookup(header[len(_BEARER) :].strip())
        if grant is None:
            log.warning("refused %s from %s: unknown management token", what, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown management token")
        assert grant is not None
        return grant

    async def Validate(
        self, request: pb.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyResponse:
        await self._authorise(context, "Validate")
        return _outcome(self._control.apply(request.mesh_yaml, dry_run=True))

    async def Apply(self, request: pb.ApplyRequest, context: grpc.aio.ServicerContext) -> pb.ApplyResponse:
        who = await self._authorise(context, "Apply")
        outcome = self._control.apply(request.mesh_yaml, dry_run=request.dry_run, source=f"api ({who})")
        if outcome.applied:
            log.info("%s applied config version %s from %s", who, outcome.version, context.peer())
        return _outcome(outcome)

    async def ShiftTraffic(
        self, request: pb.ShiftTrafficRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyResponse:
        who = await self._authorise(context, "ShiftTraffic")
        outcome = self._control.shift(request.service, dict(request.weights), dry_run=request.dry_run)
        if outcome.applied:
            weights = ", ".join(f"{k}={v}" for k, v in sorted(request.weights.items()))
            log.info("%s shifted %s to %s: version %s", who, request.service, weights, outcome.version)
        return _outcome(outcome)

    async def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConfigResponse:
        await self._authorise(context, "GetConfig")
        state = self._control.state
        response = pb.GetConfigResponse(xds_resources_file=str(self._control.resources_path or ""))
        if state is not None:
            response.version, response.mesh_yaml, response.source = state.version, state.text, state.source
            response.applied_at.FromDatetime(state.applied_at)
            response.groups.extend(_groups(state.groups))
        return response

    async def ListProxies(
        self, request: pb.ListProxiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProxiesResponse:
        await self._authorise(context, "ListProxies")
        response = pb.ListProxiesResponse()
        for entry in self._ledger.entries():
            proxy = response.proxies.add(
                node_id=entry.node_id,
                group=entry.cluster,
                user_agent=f"{entry.user_agent_name} {entry.user_agent_version}".strip(),
                stream_kind=entry.kind,
                peer=entry.peer,
                nacking=entry.nacking,
            )
            proxy.connected_at.FromDatetime(entry.connected_at)
            for type_url, state in sorted(entry.types.items()):
                proxy.resources.add(
                    type_url=type_url,
                    version_sent=state.version_sent,
                    version_acked=state.version_acked,
                    last_nack_message=state.last_nack_message,
                    nack_count=state.nack_count,
                    nacking=state.nacking,
                    subscribed=list(state.subscribed),
                    wildcard=state.wildcard,
                )
        return response

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        await self._authorise(context, "WatchEvents")
        queue: asyncio.Queue[pb.Event] = asyncio.Queue()

        def put(event: pb.Event) -> None:
            if queue.qsize() >= MAX_QUEUED_EVENTS:
                queue.get_nowait()
            queue.put_nowait(event)

        remove_xds = self._ledger.add_listener(lambda e: put(_xds_event(e)))
        remove_config = self._control.add_listener(lambda e: put(_config_event(e)))
        try:
            while True:
                yield await queue.get()
        finally:
            remove_xds()
            remove_config()

    async def Inventory(
        self, request: pb.InventoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.InventoryResponse:
        await self._authorise(context, "Inventory")
        return pb.InventoryResponse(peers=self._inventory.merged())


def add_to_server(service: ManagementService, server: grpc.aio.Server) -> None:
    pb_grpc.add_MeshManagementServicer_to_server(service, server)


def _outcome(outcome: Outcome) -> pb.ApplyResponse:
    return pb.ApplyResponse(
        ok=outcome.ok,
        problems=list(outcome.problems),
        version=outcome.version,
        applied=outcome.applied,
        groups=_groups(outcome.groups),
    )


def _groups(groups: dict[str, Resources]) -> list[pb.GroupSummary]:
    out = []
    for name in sorted(groups):
        summary = pb.GroupSummary(name=name)
        for type_url, by_name in groups[name].items():
            summary.resources[type_url.rsplit(".", 1)[-1]].names.extend(sorted(by_name))
        out.append(summary)
    return out


def _stamp(event: pb.Event, at: datetime) -> pb.Event:
    event.at.FromDatetime(at)
    return event


def _xds_event(e: Event) -> pb.Event:
    return _stamp(
        pb.Event(
            kind=e.kind,
            node_id=e.node_id,
            group=e.cluster,
            type_url=e.type_url,
            version=e.version,
            message=e.message,
        ),
        e.at,
    )


def _config_event(e: ConfigEvent) -> pb.Event:
    return _stamp(pb.Event(kind=e.kind, version=e.version, message=e.message), e.at)
