"""The mesh config as validated: frozen, slotted dataclasses, one per concept of the mesh YAML.

Owns the shape only. ``load.py`` builds these from YAML (and reports every problem with its
path); ``translate.py`` turns them into Envoy resources. Times are seconds; a ``None`` field
means "not configured" (Envoy's default applies). Addresses are ``(host, port)`` pairs.

Must not depend on: YAML, protobuf, grpc, asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PqMode = Literal["required", "preferred", "off"]
Protocol = Literal["http", "grpc", "tcp"]
LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]
Address = tuple[str, int]
SidecarMode = Literal["explicit", "transparent"]
MtlsMode = Literal["STRICT", "PERMISSIVE"]
OutboundPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]
# Whether inbound callers must be on a post-quantum group (RBAC, ``authz.py``), or only counted.
HybridCallers = Literal["any", "dry_run", "required"]


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance: where callers connect (the instance's sidecar inbound address when the
    version or service has a sidecar, the application itself otherwise)."""

    address: Address
    locality: Locality = Locality()
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A sidecar group: the meshproxy instances whose bootstrap ``node.cluster`` is ``group``.

    ``inbound`` is where the sidecar terminates PQ mTLS for callers, ``app`` the local
    application it forwards to; a sidecar without ``inbound`` only makes outbound calls.
    A ``transparent`` sidecar has neither: the application's traffic is captured (``meshproxy
    iptables``) into Istio's ``virtualOutbound`` / ``virtualInbound`` listeners, ``mtls`` says
    whether its inbound also takes plaintext (``PERMISSIVE``), and ``outbound_traffic_policy``
    overrides the mesh's for destinations outside the mesh.
    """

    group: str
    inbound: Address | None = None
    app: Address | None = None
    mode: SidecarMode = "explicit"
    mtls: MtlsMode = "STRICT"
    outbound_traffic_policy: OutboundPolicy | None = None  # None: the mesh's


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A port of a service's virtual IP; ``protocol`` None means detected per connection."""

    port: int
    protocol: Protocol | None = None


@dataclass(frozen=True, slots=True)
class Version:
    """A subset of a service's endpoints (``versions:``); the unnamed subset has name ``""``."""

    name: str
    endpoints: tuple[Endpoint, ...]
    sidecar: Sidecar | None = None


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    on: tuple[str, ...]
    per_try_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A request match: one path condition and exact header values (all must hold)."""

    prefix: str | None = "/"
    path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Where matching requests go: ``split`` is (version, weight) pairs with weights > 0, in
    the order written. ``pinned`` routes (written with ``to:``) keep their destination when
    the management API shifts the service's traffic."""

    match: Match
    split: tuple[tuple[str, int], ...]
    pinned: bool = False
    retries: Retries | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_failure: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    lb: LbPolicy = "round_robin"
    connect_timeout: float = 1.0
    circuit_breakers: CircuitBreakers | None = None
    outlier_detection: OutlierDetection | None = None


@dataclass(frozen=True, slots=True)
class Allow:
    """One caller the service admits: an exact SPIFFE ID or, when ``prefix``, every ID below it."""

    identity: str
    prefix: bool = False

    def admits(self, identity: str) -> bool:
        return identity.startswith(self.identity) if self.prefix else identity == self.identity


@dataclass(frozen=True, slots=True)
class Service:
    """``port`` and ``protocol`` are what explicit mode uses (the outbound listener's port, and
    HTTP unless written otherwise); ``ports`` are the VIP's ports, the first being ``port``."""

    name: str
    port: int
    protocol: Protocol
    identity: str
    versions: tuple[Version, ...]
    routes: tuple[Route, ...]
    policy: Policy = Policy()
    allow: tuple[Allow, ...] = ()
    sidecar: Sidecar | None = None
    # The virtual IPs callers address (Kubernetes' clusterIPs: one, or one per family for a
    # dual-stack service); transparent mode only.
    vips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()  # the VIP's ports, ``port`` first

    def admits(self, identity: str) -> bool:
        return any(a.admits(identity) for a in self.allow)

    def sidecars(self) -> tuple[Sidecar, ...]:
        """The sidecar groups that run this service: the service's own, or one per version."""
        if self.sidecar is not None:
            return (self.sidecar,)
        return tuple(v.sidecar for v in self.versions if v.sidecar is not None)

    def meshed(self, version: Version) -> bool:
        """Whether callers reach ``version`` through a sidecar (and so over PQ mTLS)."""
        return self.sidecar is not None or version.sidecar is not None


@dataclass(frozen=True, slots=True)
class Sidecars:
    """Where the sidecars find their certificates: ``cert_dir`` with ``{group}`` / ``{service}``
    placeholders, holding the identity agent's ``cert.pem``, ``key.pem`` and ``ca.pem``; and the
    address their outbound listeners bind; transparent sidecars bind ``virtual_outbound`` and
    ``virtual_inbound`` (Istio's 15001 and 15006), where ``meshproxy iptables`` redirects (IPv4
    and IPv6): ``::`` is one dual-stack socket (``ipv4_compat``), ``0.0.0.0`` IPv4 only (a pod
    whose kernel has no IPv6)."""

    cert_dir: str = "/var/run/meshproxy/certs"
    outbound_address: str = "127.0.0.1"
    virtual_outbound: Address = ("::", 15001)
    virtual_inbound: Address = ("::", 15006)
    # Istio's standard metrics (istio_requests_total, istio_tcp_*) from every sidecar listener:
    # the istio.stats filters (controlplane/mesh/telemetry.py). On by default, as in Istio.
    istio_metrics: bool = True


@dataclass(frozen=True, slots=True)
class Mesh:
    trust_domain: str
    pq: PqMode
    services: tuple[Service, ...]
    sidecars: Sidecars = Sidecars()
    namespace: str = "default"
    outbound_traffic_policy: OutboundPolicy = "ALLOW_ANY"  # Istio's default
    hybrid_callers: HybridCallers = "any"

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)
