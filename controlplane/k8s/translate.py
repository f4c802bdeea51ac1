"""The cluster's Services, EndpointSlices, Pods and Nodes (and mesh-policy objects) as the mesh model.

Owns how Kubernetes objects become `controlplane.mesh.model` values, the same model the mesh
file feeds, so the Envoy translation, the snapshot cache and the management API are shared:

- A **Service** (not ``ExternalName``, not headless: transparent capture routes by VIP) is the
  mesh service ``<name>.<namespace>``; its TCP ports are the VIP's ports (the first is the
  service's ``port``), each port's protocol read as Istio does: ``appProtocol`` (``http``,
  ``http2``, ``kubernetes.io/h2c``, ``grpc``, ``tcp``), else the port name's prefix
  (``http-web``, ``grpc``), else detected per connection; ``clusterIPs`` are its VIPs.
- Its **endpoints** are the addresses of the EndpointSlices labelled
  ``kubernetes.io/service-name: <name>``, at the slice port named as the first Service port
  (the resolved ``targetPort``). kube-proxy's rule: endpoints that are ``ready`` (an absent
  condition counts as true); when none is, those that are ``serving`` and ``terminating``, so a
  Service whose pods are all shutting down still answers while they drain. An address listed
  by two slices (a slice being replaced) counts once.
- **Localities**: ``region`` from the pod's, else its node's ``topology.kubernetes.io/region``
  label; ``zone`` from the slice endpoint's ``zone``, else the same labels'
  ``topology.kubernetes.io/zone``; ``sub_zone`` from ``topology.istio.io/subzone``. Envoy's
  locality-aware load balancing and failover then work across zones and regions.
- **Versions**: a ``ServiceRoute``'s ``versions`` (pod-label subsets; a pod in none is left
  out), else the pods' version label (`annotations.VERSION_LABELS`), else one unnamed version.
  Without a ServiceRoute the one route splits by endpoint count (as a Service spreads over its
  pods); with one, its routes apply (`policies`).
- **Sidecars and identity**: a pod the injector marked (``meshproxy.io/status``) runs a
  transparent sidecar in `annotations.sidecar_group`'s group, the same function the injector
  uses; a version's sidecar is its injected pods' group. Endpoints of a meshed version that are
  not injected (a rollout in progress) are left out: callers reach the version over mutual TLS,
  which they could not answer. The service's identity is its pods' service account's SPIFFE ID
  (`annotations.spiffe_id`, what the CA issues them). A sidecar group backs one Service in the
  mesh model: a second Service selecting the same pods is reported and left out.
- ``ServicePolicy``, ``ServiceAuthorization`` and ``PostQuantumPolicy`` objects naming the
  service in ``spec.service`` apply to it (`policies`).

Problems (a Service whose pods run as two service accounts, a spec the model cannot honour)
are returned as ``<Kind> <namespace>/<name>: <path>: <reason>``; the object keeps what can be
kept. Everything here is a pure function of its inputs; a `Memo` carries unchanged Services'
translations from one call to the next (relying on the resourceVersion the API server puts on
every object).

Must not depend on: a Kubernetes client, asyncio, the watch, grpc.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.k8s import policies
from controlplane.k8s.annotations import (
    GROUP,
    STATUS,
    VERSION_LABELS,
    sidecar_group,
    spiffe_id,
)
from controlplane.k8s.objects import JsonObject, Key, resource_version
from controlplane.mesh.model import (
    Allow,
    Endpoint,
    Locality,
    Match,
    Mesh,
    OutboundPolicy,
    Policy,
    PqMode,
    Protocol,
    Route,
    Service,
    ServicePort,
    Sidecar,
    Sidecars,
    Version,
)

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
SUBZONE = "topology.istio.io/subzone"
SERVICE_NAME = "kubernetes.io/service-name"
_APP_PROTOCOLS: dict[str, Protocol] = {
    "http": "http",
    "http2": "http",
    "kubernetes.io/h2c": "http",
    "grpc": "grpc",
    "tcp": "tcp",
}
_NAME_PREFIXES: dict[str, Protocol] = {"http": "http", "http2": "http", "grpc": "grpc", "tcp": "tcp"}


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """What the cluster does not say: the mesh-wide settings (``controlplane serve`` flags)."""

    trust_domain: str
    pq: PqMode = "required"
    sidecars: Sidecars = field(default_factory=Sidecars)
    outbound_traffic_policy: OutboundPolicy = "ALLOW_ANY"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The objects the source holds, each kind by (namespace, name)."""

    services: Mapping[Key, JsonObject] = field(default_factory=dict)
    endpoint_slices: Mapping[Key, JsonObject] = field(default_factory=dict)
    pods: Mapping[Key, JsonObject] = field(default_factory=dict)
    nodes: Mapping[Key, JsonObject] = field(default_factory=dict)
    routes: Mapping[Key, JsonObject] = field(default_factory=dict)
    policies: Mapping[Key, JsonObject] = field(default_factory=dict)
    authorizations: Mapping[Key, JsonObject] = field(default_factory=dict)
    pq_policies: Mapping[Key, JsonObject] = field(default_factory=dict)


# ----------------------------------------------------------------------------- what the store keeps


def project_pod(pod: JsonObject) -> JsonObject:
    """What discovery reads of a Pod: names, labels, the injector's and the group annotation,
    service account and node (a Pod's spec and status are most of its size)."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = pod.get("spec") or {}
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "namespace": metadata.get("namespace", ""),
            "labels": metadata.get("labels") or {},
            "annotations": {k: annotations[k] for k in (STATUS, GROUP) if k in annotations},
        },
        "spec": {
            "serviceAccountName": spec.get("serviceAccountName", ""),
            "nodeName": spec.get("nodeName", ""),
        },
    }


def project_node(node: JsonObject) -> JsonObject:
    """A Node's name and topology labels."""
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "labels": {k: labels[k] for k in (REGION, ZONE, SUBZONE) if k in labels},
        }
    }


# ----------------------------------------------------------------------------- the mesh


class _Index:
    """The cluster's objects looked up by what refers to them, built once per translation."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.slices: dict[Key, list[JsonObject]] = defaultdict(list)
        for (namespace, _), s in sorted(cluster.endpoint_slices.items()):
            owner = ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME)
            if owner:
                self.slices[(namespace, owner)].append(s)
        self.routes = by_service(cluster.routes)
        self.policies = by_service(cluster.policies)
        self.authorizations = by_service(cluster.authorizations)
        self.pq_policies = by_service(cluster.pq_policies)


def by_service(objects: Mapping[Key, JsonObject]) -> dict[Key, JsonObject]:
    """Policy objects by the (namespace, Service) their ``spec.service`` names; of two naming
    one Service, the first by name applies (the API server cannot prevent it)."""
    out: dict[Key, JsonObject] = {}
    for (namespace, _), obj in sorted(objects.items()):
        service = str((obj.get("spec") or {}).get("service", ""))
        out.setdefault((namespace, service), obj)
    return out


class Memo:
    """Each Service's last translation and what it was made from: the resourceVersions of the
    Service, its slices and its policy objects, and the pods and nodes its endpoints refer to
    as the store keeps them (so a pod's status changing, which the store drops, reuses it).
    A translation whose inputs are equal is reused as the same object: a change to one Service
    costs one Service's work, and comparing two meshes is mostly identity checks."""

    def __init__(self) -> None:
        self.services: dict[Key, tuple[tuple[Any, ...], Service | None, tuple[str, ...]]] = {}


def translate_cluster(
    cluster: Cluster, settings: MeshSettings, memo: Memo | None = None
) -> tuple[Mesh, list[str]]:
    """The mesh the cluster describes, and the problems found on the way; ``memo`` (kept from
    one call to the next with the same ``settings``) reuses unchanged Services' translations."""
    index = _Index(cluster)
    problems: list[str] = []
    owners: dict[str, str] = {}  # sidecar group -> the mesh service it backs
    services = []
    seen: dict[Key, tuple[tuple[Any, ...], Service | None, tuple[str, ...]]] = {}
    for key, obj in sorted(cluster.services.items()):
        if memo is None:
            service = _service(key, obj, index, settings, problems)
        else:
            inputs = _inputs(key, obj, index)
            cached = memo.services.get(key)
            if cached is None or cached[0] != inputs:
                found: list[str] = []
                cached = (inputs, _service(key, obj, index, settings, found), tuple(found))
            seen[key] = cached
            service = cached[1]
            problems.extend(cached[2])
        if service is None:
            continue
        for sidecar in service.sidecars():
            owner = owners.setdefault(sidecar.group, service.name)
            if owner != service.name:
                problems.append(
                    f"Service {key[0]}/{key[1]}: its pods' sidecar group {sidecar.group!r} already backs "
                    f"{owner}; a sidecar group backs one Service, so this one is left out"
                )
                service = None
                break
        if service is not None:
            services.append(service)
    if memo is not None:
        memo.services = seen
    mesh = Mesh(
        settings.trust_domain,
        settings.pq,
        tuple(services),
        settings.sidecars,
        outbound_traffic_policy=settings.outbound_traffic_policy,
    )
    return mesh, problems


def _inputs(key: Key, obj: JsonObject, index: _Index) -> tuple[Any, ...]:
    """What `_service` reads for ``key`` (see `Memo`)."""
    slices = index.slices.get(key, ())
    pods, nodes = index.cluster.pods, index.cluster.nodes
    members = []
    for s in slices:
        for e in s.get("endpoints") or ():
            pod = pods.get((key[0], str((e.get("targetRef") or {}).get("name", ""))))
            node_name = e.get("nodeName") or ((pod or {}).get("spec") or {}).get("nodeName") or ""
            members.append((pod, nodes.get(("", str(node_name)))))
    policy_objects = (index.routes, index.policies, index.authorizations, index.pq_policies)
    return (
        resource_version(obj),
        tuple(resource_version(s) for s in slices),
        tuple(members),
        tuple(resource_version(objects.get(key)) for objects in policy_objects),
    )


def _service(
    key: Key, obj: JsonObject, index: _Index, settings: MeshSettings, problems: list[str]
) -> Service | None:
    namespace, name = key
    spec = obj.get("spec") or {}
    vips = tuple(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None")
    ports = [p for p in spec.get("ports") or [] if (p.get("protocol") or "TCP") == "TCP" and p.get("port")]
    if spec.get("type") == "ExternalName" or not vips or not ports:
        return None
    where = f"Service {namespace}/{name}"
    route_obj = index.routes.get(key)
    endpoints = _endpoints(index, key, str(ports[0].get("name") or ""))
    versions, identity = _versions(where, namespace, route_obj, endpoints, index, settings, problems)
    names = [v.name for v in versions]
    routes = policies.routes(route_obj, names, problems) if route_obj is not None else None
    if routes is None:
        routes = _default_routes(versions, weighted=route_obj is None)
    policy_obj = index.policies.get(key)
    policy = policies.policy(policy_obj, problems) if policy_obj is not None else None
    authz = index.authorizations.get(key)
    allow = policies.allow(authz, settings.trust_domain, problems) if authz is not None else None
    if (pq := index.pq_policies.get(key)) is not None:
        problems.extend(policies.pq_problems(pq, settings.pq))
    return Service(
        name=f"{name}.{namespace}",
        port=int(ports[0]["port"]),
        protocol=_protocol(ports[0]) or "http",
        identity=identity,
        versions=versions,
        routes=routes,
        policy=policy or Policy(),
        allow=(Allow(f"spiffe://{settings.trust_domain}/", True),) if allow is None else allow,
        vips=vips,
        ports=tuple(ServicePort(int(p["port"]), _protocol(p)) for p in ports),
    )


def _protocol(port: Mapping[str, Any]) -> Protocol | None:
    app = str(port.get("appProtocol") or "").lower()
    if app in _APP_PROTOCOLS:
        return _APP_PROTOCOLS[app]
    prefix = str(port.get("name") or "").lower().split("-", 1)[0]
    return _NAME_PREFIXES.get(prefix)


@dataclass(frozen=True, slots=True)
class _Instance:
    endpoint: Endpoint
    pod: JsonObject | None


def _endpoints(index: _Index, key: Key, port_name: str) -> list[_Instance]:
    """kube-proxy's choice: the ready endpoints, else the serving terminating ones."""
    ready: dict[tuple[str, int], _Instance] = {}
    draining: dict[tuple[str, int], _Instance] = {}
    pods, nodes = index.cluster.pods, index.cluster.nodes
    for s in index.slices.get(key, ()):
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        port = next((p.get("port") for p in s.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if not port:
            continue
        for e in s.get("endpoints") or []:
            addresses = e.get("addresses") or []
            if not addresses:
                continue
            conditions = e.get("conditions") or {}
            if conditions.get("ready") is not False:
                into = ready
            elif conditions.get("terminating") and conditions.get("serving") is not False:
                into = draining
            else:
                continue
            ref = e.get("targetRef") or {}
            pod = pods.get((key[0], str(ref.get("name", "")))) if ref.get("kind") == "Pod" else None
            node = nodes.get(
                ("", str(e.get("nodeName") or ((pod or {}).get("spec") or {}).get("nodeName") or ""))
            )
            address = (str(addresses[0]), int(port))
            into.setdefault(address, _Instance(Endpoint(address, _locality(e, pod, node)), pod))
    return list((ready or draining).values())


def _locality(endpoint: Mapping[str, Any], pod: JsonObject | None, node: JsonObject | None) -> Locality:
    pod_labels = _labels(pod)
    node_labels = _labels(node)

    def label(name: str) -> str:
        return str(pod_labels.get(name) or node_labels.get(name) or "")

    return Locality(label(REGION), str(endpoint.get("zone") or "") or label(ZONE), label(SUBZONE))


def _labels(obj: JsonObject | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _versions(
    where: str,
    namespace: str,
    route_obj: JsonObject | None,
    instances: list[_Instance],
    index: _Index,
    settings: MeshSettings,
    problems: list[str],
) -> tuple[tuple[Version, ...], str]:
    """The service's versions (with their sidecars) and its identity."""
    declared = [str(v.get("name", "")) for v in ((route_obj or {}).get("spec") or {}).get("versions") or []]
    by_version: dict[str, list[_Instance]] = {name: [] for name in declared}
    for instance in instances:
        labels = _labels(instance.pod)
        if route_obj is not None:
            version = policies.version_of(route_obj, labels)
        else:
            version = next((str(labels[k]) for k in VERSION_LABELS if labels.get(k)), "")
        if version is not None:
            by_version.setdefault(version, []).append(instance)
    accounts = sorted({_account(i.pod) for i in instances if i.pod is not None})
    if len(accounts) > 1:
        problems.append(
            f"{where}: its pods run as service accounts {', '.join(accounts)}; a service has one identity, "
            f"so callers verify {accounts[0]!r} (run every pod of a Service as one service account)"
        )
    identity = spiffe_id(settings.trust_domain, namespace, accounts[0] if accounts else "default")
    versions = [
        _version(where, namespace, name, members, problems)
        for name, members in sorted(by_version.items(), key=lambda kv: (_rank(declared, kv[0]), kv[0]))
    ]
    return tuple(versions) or (Version("", ()),), identity


def _rank(declared: list[str], version: str) -> int:
    """A ServiceRoute's versions in its order, label-found ones after them."""
    return declared.index(version) if version in declared else len(declared)


def _version(where: str, namespace: str, name: str, members: list[_Instance], problems: list[str]) -> Version:
    groups = sorted({_group(namespace, i.pod) for i in members if i.pod is not None and _injected(i.pod)})
    if not groups:
        return Version(name, tuple(i.endpoint for i in members))
    label = f"version {name!r}" if name else "its pods"
    if len(groups) > 1:
        problems.append(
            f"{where}: {label} run in sidecar groups {', '.join(groups)}; callers use {groups[0]!r}'s "
            "configuration (give the pods one meshproxy.io/group)"
        )
    plain = [i for i in members if i.pod is None or not _injected(i.pod)]
    if plain:
        problems.append(
            f"{where}: {len(plain)} endpoint(s) of {label} have no sidecar while the others do; they are "
            "left out until injected (callers reach the version over mutual TLS)"
        )
    meshed = tuple(i.endpoint for i in members if i.pod is not None and _injected(i.pod))
    return Version(name, meshed, Sidecar(groups[0], mode="transparent"))


def _injected(pod: JsonObject) -> bool:
    return STATUS in ((pod.get("metadata") or {}).get("annotations") or {})


def _account(pod: JsonObject) -> str:
    return str((pod.get("spec") or {}).get("serviceAccountName") or "default")


def _group(namespace: str, pod: JsonObject) -> str:
    metadata = pod.get("metadata") or {}
    return sidecar_group(
        namespace, metadata.get("labels") or {}, metadata.get("annotations") or {}, _account(pod)
    )


def _default_routes(versions: tuple[Version, ...], *, weighted: bool) -> tuple[Route, ...]:
    """One route to every version: by endpoint count (as a Service spreads over its pods) when
    ``weighted`` and there is more than one version (one version's weight means nothing, and a
    constant one keeps scaling from changing the route configuration), else in equal shares (a
    ServiceRoute's versions without routes, as the mesh file's); a service without endpoints
    still routes, to its empty version (503s)."""
    weighted = weighted and len(versions) > 1
    split = tuple((v.name, len(v.endpoints) if weighted else 1) for v in versions)
    kept = tuple((name, weight) for name, weight in split if weight > 0) or ((versions[0].name, 1),)
    return (Route(Match(), kept),)
