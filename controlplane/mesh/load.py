"""The mesh YAML read and validated into `controlplane.mesh.model`.

Owns the concise format's rules and its messages: every problem is collected (not just the
first), each as ``path: reason`` where the path is written as in the document
(``services[1].routes[0].split.v3``), and reported together in one `ConfigError`. Unknown keys
are refused: the format is ours and small, so a typo is more likely than an extension.
The document is YAML text or an already parsed mapping (the management API's traffic shift edits
the mapping and validates it again).

Must not depend on: protobuf, grpc, asyncio, the translator.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from functools import partial
from typing import Any, get_args

import yaml

from controlplane.mesh.doc import (
    NAME,
    Doc,
    FastLoader,
    Loader,
    boolean,
    choice,
    dns_name,
    duration,
    host_port,
    integer,
    port_number,
    string,
)
from controlplane.mesh.model import (
    Allow,
    CircuitBreakers,
    Endpoint,
    HybridCallers,
    LbPolicy,
    Locality,
    Match,
    Mesh,
    MtlsMode,
    OutboundPolicy,
    OutlierDetection,
    Policy,
    PqMode,
    Protocol,
    Retries,
    Route,
    Service,
    ServicePort,
    Sidecar,
    SidecarMode,
    Sidecars,
    Version,
)
from controlplane.tokens import Grant
from meshproxy.config import limits
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.spiffe import SpiffeId

Unresolved = tuple[Doc, str]  # a service name in `allow`, resolved once every service is known

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions.
RETRY_ON = (
    *("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited"),
    *("retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers"),
    *("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"),
)


def load_mesh(text: str, *, source: str = "mesh") -> tuple[Mesh, dict[str, Any]]:
    """The validated mesh and the parsed document, or `ConfigError` naming ``source``."""
    try:
        # The bootstrap's bounds on hostile files (size, nesting, alias expansion), checked on the
        # event stream before any object is built: deep nesting ended in a RecursionError here.
        limits.check_size(len(text))
        doc = limits.load_yaml(text, FastLoader, Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from None
    return validate_mesh(doc, source=source), doc


def validate_mesh(doc: Any, *, source: str = "mesh") -> Mesh:
    problems: list[str] = []
    mesh = _mesh(Doc(doc, "", problems))
    if problems or mesh is None:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return mesh


# ----------------------------------------------------------------------------- mesh


def _mesh(d: Doc) -> Mesh | None:
    if d.value is None:
        d.problem("the mesh document is empty")
        return None
    if not d.mapping(("mesh", "sidecars", "services"), ("mesh", "services")):
        return None
    m = d.child("mesh")
    trust_domain, namespace = "mesh.local", "default"
    pq: PqMode = "required"
    policy: OutboundPolicy = "ALLOW_ANY"
    hybrid: HybridCallers = "any"
    if m.mapping(("trust_domain", "pq", "namespace", "outbound_traffic_policy", "hybrid_callers")):
        trust_domain = m.get("trust_domain", string, trust_domain)
        pq = m.get("pq", partial(choice, choices=get_args(PqMode)), pq)
        namespace = m.get("namespace", dns_name, namespace)
        policy = m.get("outbound_traffic_policy", _outbound_policy, policy)
        hybrid = m.get("hybrid_callers", partial(choice, choices=get_args(HybridCallers)), hybrid)
        try:
            SpiffeId.parse(f"spiffe://{trust_domain}")
        except IdentityError as exc:
            m.child("trust_domain").problem(str(exc))
    sidecars = d.get("sidecars", _sidecars, Sidecars())
    parsed = [_service(s, trust_domain, namespace) for s in d.child("services").items()]
    services = tuple(_resolve_allow(parsed))
    _check_unique(d.child("services"), [s.name for s in services], "service name")
    _check_unique(d.child("services"), [s.port for s in services], "port (outbound listeners bind it)")
    groups = [g.group for s in services for g in s.sidecars()]
    _check_unique(d.child("services"), groups, "sidecar group")
    _check_unique(d.child("services"), [v for s in services for v in s.vips], "vip")
    return Mesh(trust_domain, pq, services, sidecars, namespace, policy, hybrid)


def _check_unique(d: Doc, values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen and value not in ("", 0):
            d.problem(f"{what} {value!r} appears more than once")
        seen.add(value)


def _sidecars(d: Doc) -> Sidecars:
    if not d.mapping(
        ("cert_dir", "outbound_address", "virtual_outbound", "virtual_inbound", "istio_metrics")
    ):
        return Sidecars()
    default = Sidecars()
    bind = partial(host_port, ip_only=True, why="a listener binds an IP address")
    return Sidecars(
        d.get("cert_dir", string, default.cert_dir),
        d.get("outbound_address", string, default.outbound_address),
        d.get("virtual_outbound", bind, None) or default.virtual_outbound,
        d.get("virtual_inbound", bind, None) or default.virtual_inbound,
        d.get("istio_metrics", boolean, default.istio_metrics),
    )


def _service(d: Doc, trust_domain: str, namespace: str) -> tuple[Service, tuple[Allow | Unresolved, ...]]:
    """The service (``allow`` empty) and its ``allow`` entries, names not yet resolved."""
    allowed = ("name", "port", "protocol", "ports", "vip", "identity", "versions", "endpoints", "routes")
    d.mapping((*allowed, "policy", "allow", "sidecar"), ("name",))
    ports = _service_ports(d)
    name = d.get("name", dns_name, "")
    identity = d.get("identity", string, f"spiffe://{trust_domain}/ns/{namespace}/sa/{name}")
    _identity(d.child("identity") if "identity" in (d.value or {}) else d, identity, trust_domain)
    has_versions = isinstance(d.value, dict) and "versions" in d.value
    if has_versions and "endpoints" in d.value:
        d.problem("give either 'versions' (each with its endpoints) or 'endpoints', not both")
    if has_versions:
        versions = _versions(d.child("versions"), name)
    else:
        versions = (Version("", d.get("endpoints", _endpoints, ())),)
    service_sidecar = d.get("sidecar", lambda x: _sidecar(x, name), None)
    if service_sidecar is not None and any(v.sidecar for v in versions):
        d.child("sidecar").problem("give the sidecar on the service or on its versions, not both")
    names = [v.name for v in versions]
    default = _default_routes(names)
    routes = d.get("routes", lambda x: _routes(x, names), default) or default
    everyone: tuple[Allow | Unresolved, ...] = (Allow(f"spiffe://{trust_domain}/", True),)
    allow = d.get("allow", partial(_allow, trust_domain=trust_domain), everyone)
    service = Service(
        name=name,
        port=ports[0].port if ports else 0,
        protocol=(ports[0].protocol if ports else None) or "http",
        identity=identity,
        versions=versions,
        routes=routes,
        policy=d.get("policy", _policy, Policy()),
        sidecar=service_sidecar,
        vips=d.get("vip", _vips, ()),
        ports=ports,
    )
    return service, allow


def _service_ports(d: Doc) -> tuple[ServicePort, ...]:
    """``port`` (and ``protocol``) or ``ports``: a list of ports, each a number (protocol
    detected) or ``{port, protocol}``; the first is the service's ``port``."""
    if not isinstance(d.value, dict):
        return ()
    if "ports" in d.value and ("port" in d.value or "protocol" in d.value):
        d.problem("give either 'port' (and 'protocol') or 'ports', not both")
    if "ports" not in d.value:
        if "port" not in d.value:
            d.problem("'port' (or 'ports') is required")
            return ()
        return (ServicePort(port_number(d.child("port")), d.get("protocol", _protocol, None)),)
    ports = []
    for p in d.child("ports").items():
        if not isinstance(p.value, dict):
            ports.append(ServicePort(port_number(p)))
        elif p.mapping(("port", "protocol"), ("port",)):
            ports.append(ServicePort(p.get("port", port_number, 0), p.get("protocol", _protocol, None)))
    if not ports and isinstance(d.value["ports"], list):
        d.child("ports").problem("must name at least one port")
    _check_unique(d.child("ports"), [p.port for p in ports], "port")
    return tuple(ports)


def _protocol(d: Doc) -> Protocol:
    return choice(d, get_args(Protocol))


def _outbound_policy(d: Doc) -> OutboundPolicy:
    return choice(d, get_args(OutboundPolicy))


def _vips(d: Doc) -> tuple[str, ...]:
    """One VIP, or a list of one per family (a dual-stack service, Kubernetes' clusterIPs)."""
    if not isinstance(d.value, list):
        vip = _vip(d)
        return () if vip is None else (vip,)
    found = [vip for item in d.items() if (vip := _vip(item)) is not None]
    families = [ipaddress.ip_address(v).version for v in found]
    if not d.value or len(d.value) > 2 or len(set(families)) < len(families):
        d.problem("a list of VIPs holds one IPv4 and/or one IPv6 address")
    return tuple(found)


def _vip(d: Doc) -> str | None:
    """An IPv4 or IPv6 unicast address, like a Kubernetes ClusterIP (written canonically, so
    ``fd00::0a`` and ``fd00::a`` are the same VIP)."""
    value = string(d)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if value:
            d.problem(f"{value!r} is not an IPv4 or IPv6 address")
        return None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        d.problem(f"{value} cannot be a virtual IP (it is unspecified, multicast or loopback)")
        return None
    return str(ip)


def _identity(d: Doc, identity: str, trust_domain: str) -> None:
    try:
        parsed = SpiffeId.parse(identity)
    except IdentityError as exc:
        d.problem(str(exc))
        return
    if parsed.trust_domain != trust_domain:
        d.problem(f"{identity} is outside the mesh's trust domain {trust_domain!r}")


def _versions(d: Doc, service: str) -> tuple[Version, ...]:
    if not isinstance(d.value, dict) or not d.value:
        d.problem("must be a non-empty mapping of version name to {endpoints, sidecar}")
        return ()
    versions = []
    for key in d.value:
        v = d.child(key)
        version = dns_name(Doc(key, v.path, d.problems))
        if v.value is None or not v.mapping(("endpoints", "sidecar")):
            continue
        sidecar = v.get("sidecar", partial(_sidecar, default_group=f"{service}-{version}"), None)
        versions.append(Version(version, v.get("endpoints", _endpoints, ()), sidecar))
    return tuple(versions)


def _endpoints(d: Doc) -> tuple[Endpoint, ...]:
    endpoints = []
    for e in d.items():
        if isinstance(e.value, str):  # the short form: "10.0.0.1:8080"
            address = host_port(e, ip_only=True)
            if address:
                endpoints.append(Endpoint(address))
            continue
        if not e.mapping(("address", "locality", "weight"), ("address",)):
            continue
        address = e.get("address", lambda x: host_port(x, ip_only=True), None)
        locality = e.get("locality", _locality, Locality())
        if address:
            endpoints.append(Endpoint(address, locality, e.get("weight", lambda x: integer(x, 1, 128), 1)))
    return tuple(endpoints)


def _locality(d: Doc) -> Locality:
    if not d.mapping(("region", "zone", "sub_zone")):
        return Locality()
    return Locality(d.get("region", string, ""), d.get("zone", string, ""), d.get("sub_zone", string, ""))


def _sidecar(d: Doc, default_group: str) -> Sidecar:
    if d.value == {} or d.value is True:
        return Sidecar(default_group)
    if not d.mapping(("group", "inbound", "app", "mode", "mtls", "outbound_traffic_policy")):
        return Sidecar(default_group)
    inbound = d.get("inbound", lambda x: host_port(x, ip_only=False), None)
    app = d.get("app", lambda x: host_port(x, ip_only=False), None)
    mode: SidecarMode = d.get("mode", partial(choice, choices=get_args(SidecarMode)), "explicit")
    if mode == "transparent":
        if inbound is not None or app is not None:
            d.problem("a transparent sidecar takes neither 'inbound' nor 'app': its traffic is captured")
    elif (inbound is None) != (app is None):
        d.problem("'inbound' and 'app' go together: the sidecar takes mTLS on inbound, forwards to app")
    for key in ("mtls", "outbound_traffic_policy"):
        if mode != "transparent" and key in d.value:
            d.child(key).problem("applies to 'mode: transparent' sidecars only")
    return Sidecar(
        d.get("group", string, default_group),
        inbound,
        app,
        mode,
        d.get("mtls", partial(choice, choices=get_args(MtlsMode)), "STRICT"),
        d.get("outbound_traffic_policy", _outbound_policy, None),
    )


def _default_routes(versions: list[str]) -> tuple[Route, ...]:
    """Without ``routes``, everything goes to the versions in equal shares."""
    return (Route(Match(), tuple((v, 1) for v in versions)),) if versions else ()


def _routes(d: Doc, versions: list[str]) -> tuple[Route, ...]:
    return tuple(r for r in (_route(x, versions) for x in d.items()) if r is not None)


def _route(d: Doc, versions: list[str]) -> Route | None:
    if not d.mapping(("match", "split", "to", "retries", "timeout")):
        return None
    if "split" in d.value and "to" in d.value:
        d.problem("give either 'split' or 'to', not both")
    pinned = "to" in d.value
    if pinned:
        split = _split(Doc({d.value["to"]: 100}, d.child("to").path, d.problems), versions)
    elif "split" in d.value:
        split = _split(d.child("split"), versions)
    else:
        split = tuple((v, 1) for v in versions)
    return Route(
        d.get("match", _match, Match()),
        split,
        pinned,
        d.get("retries", _retries, None),
        d.get("timeout", duration, None),
    )


def _split(d: Doc, versions: list[str]) -> tuple[tuple[str, int], ...]:
    """Version weights: only versions the service has, at least one weight above 0."""
    if not isinstance(d.value, dict) or not d.value:
        d.problem("must map version names to weights, e.g. {v1: 90, v2: 10}")
        return ()
    split = []
    for key, weight in d.value.items():
        w = d.child(key)
        if key not in versions:
            known = ", ".join(v for v in versions if v) or "none: add 'versions' to the service"
            w.problem(f"the service has no version {key!r} (versions: {known})")
        elif (value := integer(Doc(weight, w.path, d.problems), 0, 10000)) > 0:
            split.append((str(key), value))
    if not split and all(k in versions and isinstance(w, int) for k, w in d.value.items()):
        d.problem("at least one weight must be greater than 0")
    return tuple(split)


def _match(d: Doc) -> Match:
    if not d.mapping(("prefix", "path", "headers")):
        return Match()
    if "prefix" in d.value and "path" in d.value:
        d.problem("give either 'prefix' or 'path', not both")
    path = d.get("path", string, None)
    prefix = None if path else d.get("prefix", string, "/")
    for key in ("prefix", "path"):
        value = d.value.get(key)
        if isinstance(value, str) and value and not value.startswith("/"):
            d.child(key).problem(f"{value!r} must start with '/'")
    headers: tuple[tuple[str, str], ...] = d.get("headers", _headers, ())
    return Match(prefix, path, headers)


def _headers(d: Doc) -> tuple[tuple[str, str], ...]:
    if not isinstance(d.value, dict):
        d.problem("must map header names to exact values")
        return ()
    return tuple((str(k).lower(), string(d.child(k))) for k in d.value)


def _retries(d: Doc) -> Retries | None:
    if not d.mapping(("attempts", "on", "per_try_timeout"), ("attempts",)):
        return None
    on: tuple[str, ...] = ("5xx", "reset", "connect-failure")
    if "on" in d.value:
        on = tuple(choice(x, RETRY_ON) for x in d.child("on").items())
    attempts = d.get("attempts", lambda x: integer(x, 1, 10), 1)
    return Retries(attempts, on, d.get("per_try_timeout", duration, None))


def _policy(d: Doc) -> Policy:
    if not d.mapping(("lb", "connect_timeout", "circuit_breakers", "outlier_detection")):
        return Policy()
    return Policy(
        d.get("lb", partial(choice, choices=get_args(LbPolicy)), "round_robin"),
        d.get("connect_timeout", duration, 1.0),
        d.get("circuit_breakers", _circuit_breakers, None),
        d.get("outlier_detection", _outlier, None),
    )


def _circuit_breakers(d: Doc) -> CircuitBreakers | None:
    keys = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
    if not d.mapping(keys):
        return None
    return CircuitBreakers(**{k: d.get(k, lambda x: integer(x, 0), None) for k in keys})


def _outlier(d: Doc) -> OutlierDetection | None:
    counts = ("consecutive_5xx", "consecutive_gateway_failure")
    times = ("interval", "base_ejection_time")
    if not d.mapping((*counts, *times, "max_ejection_percent")):
        return None
    values: dict[str, Any] = {k: d.get(k, lambda x: integer(x, 1), None) for k in counts}
    values |= {k: d.get(k, duration, None) for k in times}
    values["max_ejection_percent"] = d.get("max_ejection_percent", lambda x: integer(x, 0, 100), None)
    return OutlierDetection(**values)


def _allow(d: Doc, trust_domain: str) -> tuple[Allow | Unresolved, ...]:
    """SPIFFE IDs (``spiffe://td/path``), prefixes ending in ``/``, or names of services (resolved
    to their identities once every service is known)."""
    allow: list[Allow | Unresolved] = []
    for x in d.items():
        text = string(x)
        if not text.startswith("spiffe://"):
            if NAME.match(text):
                allow.append((x, text))
            elif text:
                x.problem(f"{text!r} is neither a SPIFFE ID (spiffe://...) nor a service name")
            continue
        try:
            grant = Grant.parse(text)
        except IdentityError as exc:
            x.problem(str(exc))
            continue
        if grant.id.trust_domain != trust_domain:
            x.problem(f"{text} is outside the mesh's trust domain {trust_domain!r}")
        allow.append(Allow(text, grant.prefix))
    return tuple(allow)


def _resolve_allow(parsed: list[tuple[Service, tuple[Allow | Unresolved, ...]]]) -> list[Service]:
    identities = {s.name: s.identity for s, _ in parsed}
    resolved = []
    for service, entries in parsed:
        allow = []
        for entry in entries:
            if isinstance(entry, Allow):
                allow.append(entry)
            elif entry[1] in identities:
                allow.append(Allow(identities[entry[1]]))
            else:
                entry[0].problem(f"no service {entry[1]!r} in this mesh (or write its SPIFFE ID)")
        resolved.append(replace(service, allow=tuple(allow)))
    return resolved
