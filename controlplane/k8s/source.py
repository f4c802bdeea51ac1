"""The Kubernetes discovery source: the cluster watched, translated, and published as the mesh.

Owns the composition: one `Reflector` per kind (Services, EndpointSlices, Pods, Nodes and the
four mesh-policy CRDs of `controlplane.k8s.crds`), and the publisher that turns their stores
into the mesh model (`translate_cluster`) and hands it to `ControlPlane.apply_model`, the same
publishing path as the mesh file's (one version for every group, checked before it is set).

When it publishes:

- the first time once every kind has been listed (a kind the server does not serve, such as a
  CRD not installed, counts as listed and empty), so proxies never see a half-read cluster;
- then after changes, batched: the first change after a publish opens a window of
  ``batch_window`` seconds (`BATCH_WINDOW`), and everything that arrives in it is one publish.
  A change that leaves the mesh model equal (a Pod's status, a bookmark, an unrelated label)
  publishes nothing, so proxies are not pushed for it;
- a problem (``Service ns/name: ...``) is logged once, when it first appears;
- after each publish (or change that published nothing), the mesh-policy objects'
  ``Accepted`` conditions are written where they changed (`controlplane.k8s.status`).

A reflector that fails with an unexpected error ends the source (the exception propagates out
of `run`, and ``controlplane serve`` exits): a bug must not leave a silently stale mesh.

Must not depend on: grpc, the CA, the generated protobuf code.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime

from controlplane.app import ControlPlane, Outcome, utc_now
from controlplane.k8s.api import Api
from controlplane.k8s.crds import GROUP, KINDS, VERSION
from controlplane.k8s.status import StatusWriter, verdicts
from controlplane.k8s.translate import (
    Cluster,
    Memo,
    MeshSettings,
    project_node,
    project_pod,
    translate_cluster,
)
from controlplane.k8s.watch import WATCH_TIMEOUT, Reflector, Resource
from controlplane.mesh.model import Mesh

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
BATCH_WINDOW = 0.05
SERVICES = Resource("Service", "/api/v1/services")
ENDPOINT_SLICES = Resource("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices")
PODS = Resource("Pod", "/api/v1/pods", project_pod)
NODES = Resource("Node", "/api/v1/nodes", project_node)
CUSTOM = {kind.kind: Resource(kind.kind, f"/apis/{GROUP}/{VERSION}/{kind.plural}") for kind in KINDS}
RESOURCES = (SERVICES, ENDPOINT_SLICES, PODS, NODES, *CUSTOM.values())


class KubernetesSource:
    """Publishes the cluster's mesh into ``control`` until cancelled."""

    def __init__(
        self,
        api: Api,
        control: ControlPlane,
        settings: MeshSettings,
        *,
        rng: random.Random | None = None,
        batch_window: float = BATCH_WINDOW,
        watch_timeout: float = WATCH_TIMEOUT,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.api = api
        self.control = control
        self.settings = settings
        rng = rng or random.Random()
        self.reflectors = {
            r.kind: Reflector(api, r, self._changed, rng=rng, watch_timeout=watch_timeout) for r in RESOURCES
        }
        self.problems: frozenset[str] = frozenset()
        self._memo = Memo()
        self._status = StatusWriter(api)
        self._clock = clock
        self.published: Mesh | None = None
        self._batch_window = batch_window
        self._dirty = asyncio.Event()

    def cluster(self) -> Cluster:
        def objects(resource: Resource) -> dict[tuple[str, str], dict]:
            return self.reflectors[resource.kind].store.objects

        return Cluster(
            services=objects(SERVICES),
            endpoint_slices=objects(ENDPOINT_SLICES),
            pods=objects(PODS),
            nodes=objects(NODES),
            routes=objects(CUSTOM["ServiceRoute"]),
            policies=objects(CUSTOM["ServicePolicy"]),
            authorizations=objects(CUSTOM["ServiceAuthorization"]),
            pq_policies=objects(CUSTOM["PostQuantumPolicy"]),
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for reflector in self.reflectors.values():
                tasks.create_task(reflector.run())
            tasks.create_task(self._publisher())

    def publish(self) -> Outcome | None:
        """Translate the stores and publish when the mesh changed; the outcome, or None."""
        mesh, problems = translate_cluster(self.cluster(), self.settings, self._memo)
        for problem in sorted(set(problems) - self.problems):
            log.warning("kubernetes: %s", problem)
        self.problems = frozenset(problems)
        if mesh == self.published:
            return None
        outcome = self.control.apply_model(mesh, describe(mesh, self.api.host), source=SOURCE)
        if outcome.applied:
            self.published = mesh
        return outcome

    async def write_status(self) -> None:
        """Each mesh-policy object's ``Accepted`` condition, as the last translation found it."""
        objects = {kind: self.reflectors[kind].store.objects for kind in CUSTOM}
        mesh = self.published
        # a mesh service is "<name>.<namespace>"; neither part may hold a dot (DNS labels)
        meshed = (
            {(s.name.partition(".")[2], s.name.partition(".")[0]) for s in mesh.services} if mesh else set()
        )
        judged = verdicts(objects, meshed, self.problems)
        await self._status.write(objects, judged, self._clock())

    async def _publisher(self) -> None:
        for reflector in self.reflectors.values():
            await reflector.synced.wait()
        log.info("kubernetes: every kind listed from %s", self.api.host)
        while True:
            self._dirty.clear()
            self.publish()
            await self.write_status()
            await self._dirty.wait()
            await asyncio.sleep(self._batch_window)

    def _changed(self, resource: Resource) -> None:
        self._dirty.set()


def describe(mesh: Mesh, host: str) -> str:
    """What ``meshctl get`` shows for a mesh from the cluster: one comment line per service."""
    lines = [f"# the mesh from the Kubernetes API at {host}: {len(mesh.services)} service(s)"]
    for s in mesh.services:
        endpoints = sum(len(v.endpoints) for v in s.versions)
        ports = ",".join(str(p.port) for p in s.ports)
        versions = ",".join(v.name for v in s.versions if v.name) or "-"
        lines.append(
            f"# {s.name} vip={','.join(s.vips)} ports={ports} versions={versions} endpoints={endpoints}"
        )
    return "\n".join(lines) + "\n"
