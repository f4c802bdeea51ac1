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
import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar, get_args

import yaml

from controlplane.mesh.model import (
    Address,
    Allow,
    CircuitBreakers,
    Endpoint,
    LbPolicy,
    Locality,
    Match,
    Mesh,
    OutlierDetection,
    Policy,
    PqMode,
    Protocol,
    Retries,
    Route,
    Service,
    Sidecar,
    Sidecars,
    Version,
)
from controlplane.tokens import Grant
from meshproxy.config import limits
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.spiffe import SpiffeId

T = TypeVar("T")
S = TypeVar("S", bound=str)
Unresolved = tuple["_Doc", str]  # a service name in `allow`, resolved once every service is known

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions.
RETRY_ON = (
    *("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited"),
    *("retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers"),
    *("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"),
)


class _Doc:
    """A cursor into the document that knows its path and collects problems."""

    def __init__(self, value: Any, path: str, problems: list[str]) -> None:
        self.value, self.path, self.problems = value, path, problems

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.path or '(document)'}: {message}")

    def child(self, key: str | int) -> _Doc:
        path = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}" if self.path else key
        value = self.value.get(key) if isinstance(self.value, dict) else self.value[key]
        return _Doc(value, path, self.problems)

    def mapping(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        """Whether this is a mapping; reports unknown and missing keys."""
        if not isinstance(self.value, dict):
            self.problem(f"must be a mapping, not {_kind(self.value)}")
            return False
        for key in self.value:
            if key not in allowed:
                self.problem(f"unknown key {key!r}; expected one of: {', '.join(allowed)}")
        for key in required:
            if key not in self.value:
                self.problem(f"{key!r} is required")
        return True

    def items(self) -> list[_Doc]:
        if not isinstance(self.value, list):
            self.problem(f"must be a list, not {_kind(self.value)}")
            return []
        return [self.child(i) for i in range(len(self.value))]

    def get(self, key: str, read: Callable[[_Doc], T], default: T) -> T:
        if not isinstance(self.value, dict) or self.value.get(key) is None:
            return default
        return read(self.child(key))


class _Loader(limits.FlowDepthSafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true`` and ``false`` (any case
    PyYAML's resolver knows: ``true``, ``True``, ``TRUE``). YAML 1.1 also reads ``on``, ``off``,
    ``yes`` and ``no`` as booleans, which turned ``pq: off`` into ``False`` and a ``retries``
    ``on:`` key into ``True``; here they stay the words the user wrote."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_mesh(text: str, *, source: str = "mesh") -> tuple[Mesh, dict[str, Any]]:
    """The validated mesh and the parsed document, or `ConfigError` naming ``source``."""
    try:
        # The bootstrap's bounds on hostile files (size, nesting, alias expansion), checked on the
        # event stream before any object is built: deep nesting ended in a RecursionError here.
        limits.check_size(len(text))
        limits.check_yaml_events(yaml.parse(text, Loader=_Loader))
        doc = yaml.load(text, Loader=_Loader)  # safe: a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from None
    return validate_mesh(doc, source=source), doc


def validate_mesh(doc: Any, *, source: str = "mesh") -> Mesh:
    problems: list[str] = []
    mesh = _mesh(_Doc(doc, "", problems))
    if problems or mesh is None:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return mesh


# ----------------------------------------------------------------------------- scalars


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _str(d: _Doc) -> str:
    if not isinstance(d.value, str) or not d.value:
        d.problem(f"must be a non-empty string, not {_kind(d.value)}")
        return ""
    return d.value


def _name(d: _Doc) -> str:
    value = _str(d)
    if value and not _NAME.match(value):
        d.problem(f"{value!r} is not a valid name (lower-case letters, digits and '-', at most 63)")
    return value


def _int(d: _Doc, low: int = 0, high: int = 2**32 - 1) -> int:
    if isinstance(d.value, bool) or not isinstance(d.value, int):
        d.problem(f"must be an integer, not {_kind(d.value)}")
        return low
    if not low <= d.value <= high:
        d.problem(f"{d.value} is out of range {low}..{high}")
    return int(d.value)


def _port(d: _Doc) -> int:
    return _int(d, 1, 65535)


def _duration(d: _Doc) -> float:
    """``250ms``, ``1s``, ``1.5s``, ``2m``, ``1h``, or a number of seconds."""
    if isinstance(d.value, (int, float)) and not isinstance(d.value, bool) and d.value >= 0:
        return float(d.value)
    m = _DURATION.match(d.value) if isinstance(d.value, str) else None
    if m is None:
        d.problem(f"{d.value!r} is not a duration; write e.g. 250ms, 1s, 2m")
        return 0.0
    return float(m.group(1)) * _UNITS[m.group(2)]


def _choice(d: _Doc, choices: tuple[S, ...]) -> S:
    if d.value not in choices:
        d.problem(f"{d.value!r} is not one of: {', '.join(choices)}")
        return choices[0]
    return choices[choices.index(d.value)]


def _address(d: _Doc, *, ip_only: bool) -> Address | None:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``)."""
    text = _str(d)
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not text or not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        if text:
            d.problem(f"{text!r} is not HOST:PORT with a port in 1..65535")
        return None
    if ip_only:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            d.problem(f"{host!r} is not an IP address (EDS endpoints are not resolved by name)")
            return None
    return host, int(port_text)


# ----------------------------------------------------------------------------- mesh


def _mesh(d: _Doc) -> Mesh | None:
    if d.value is None:
        d.problem("the mesh document is empty")
        return None
    if not d.mapping(("mesh", "sidecars", "services"), ("mesh", "services")):
        return None
    m = d.child("mesh")
    trust_domain, namespace = "mesh.local", "default"
    pq: PqMode = "required"
    if m.mapping(("trust_domain", "pq", "namespace")):
        trust_domain = m.get("trust_domain", _str, trust_domain)
        pq = m.get("pq", partial(_choice, choices=get_args(PqMode)), pq)
        namespace = m.get("namespace", _name, namespace)
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
    return Mesh(trust_domain, pq, services, sidecars, namespace)


def _check_unique(d: _Doc, values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen and value not in ("", 0):
            d.problem(f"{what} {value!r} appears more than once")
        seen.add(value)


def _sidecars(d: _Doc) -> Sidecars:
    if not d.mapping(("cert_dir", "outbound_address")):
        return Sidecars()
    default = Sidecars()
    return Sidecars(
        d.get("cert_dir", _str, default.cert_dir),
        d.get("outbound_address", _str, default.outbound_address),
    )


def _service(d: _Doc, trust_domain: str, namespace: str) -> tuple[Service, tuple[Allow | Unresolved, ...]]:
    """The service (``allow`` empty) and its ``allow`` entries, names not yet resolved."""
    allowed = ("name", "port", "protocol", "identity", "versions", "endpoints", "routes", "policy")
    d.mapping((*allowed, "allow", "sidecar"), ("name", "port"))
    name = d.get("name", _name, "")
    identity = d.get("identity", _str, f"spiffe://{trust_domain}/ns/{namespace}/sa/{name}")
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
        port=d.get("port", _port, 0),
        protocol=d.get("protocol", partial(_choice, choices=get_args(Protocol)), "http"),
        identity=identity,
        versions=versions,
        routes=routes,
        policy=d.get("policy", _policy, Policy()),
        sidecar=service_sidecar,
    )
    return service, allow


def _identity(d: _Doc, identity: str, trust_domain: str) -> None:
    try:
        parsed = SpiffeId.parse(identity)
    except IdentityError as exc:
        d.problem(str(exc))
        return
    if parsed.trust_domain != trust_domain:
        d.problem(f"{identity} is outside the mesh's trust domain {trust_domain!r}")


def _versions(d: _Doc, service: str) -> tuple[Version, ...]:
    if not isinstance(d.value, dict) or not d.value:
        d.problem("must be a non-empty mapping of version name to {endpoints, sidecar}")
        return ()
    versions = []
    for key in d.value:
        v = d.child(key)
        version = _name(_Doc(key, v.path, d.problems))
        if v.value is None or not v.mapping(("endpoints", "sidecar")):
            continue
        sidecar = v.get("sidecar", partial(_sidecar, default_group=f"{service}-{version}"), None)
        versions.append(Version(version, v.get("endpoints", _endpoints, ()), sidecar))
    return tuple(versions)


def _endpoints(d: _Doc) -> tuple[Endpoint, ...]:
    endpoints = []
    for e in d.items():
        if isinstance(e.value, str):  # the short form: "10.0.0.1:8080"
            address = _address(e, ip_only=True)
            if address:
                endpoints.append(Endpoint(address))
            continue
        if not e.mapping(("address", "locality", "weight"), ("address",)):
            continue
        address = e.get("address", lambda x: _address(x, ip_only=True), None)
        locality = e.get("locality", _locality, Locality())
        if address:
            endpoints.append(Endpoint(address, locality, e.get("weight", lambda x: _int(x, 1, 128), 1)))
    return tuple(endpoints)


def _locality(d: _Doc) -> Locality:
    if not d.mapping(("region", "zone", "sub_zone")):
        return Locality()
    return Locality(d.get("region", _str, ""), d.get("zone", _str, ""), d.get("sub_zone", _str, ""))


def _sidecar(d: _Doc, default_group: str) -> Sidecar:
    if d.value == {} or d.value is True:
        return Sidecar(default_group)
    if not d.mapping(("group", "inbound", "app")):
        return Sidecar(default_group)
    inbound = d.get("inbound", lambda x: _address(x, ip_only=False), None)
    app = d.get("app", lambda x: _address(x, ip_only=False), None)
    if (inbound is None) != (app is None):
        d.problem("'inbound' and 'app' go together: the sidecar takes mTLS on inbound, forwards to app")
    return Sidecar(d.get("group", _str, default_group), inbound, app)


def _default_routes(versions: list[str]) -> tuple[Route, ...]:
    """Without ``routes``, everything goes to the versions in equal shares."""
    return (Route(Match(), tuple((v, 1) for v in versions)),) if versions else ()


def _routes(d: _Doc, versions: list[str]) -> tuple[Route, ...]:
    return tuple(r for r in (_route(x, versions) for x in d.items()) if r is not None)


def _route(d: _Doc, versions: list[str]) -> Route | None:
    if not d.mapping(("match", "split", "to", "retries", "timeout")):
        return None
    if "split" in d.value and "to" in d.value:
        d.problem("give either 'split' or 'to', not both")
    pinned = "to" in d.value
    if pinned:
        split = _split(_Doc({d.value["to"]: 100}, d.child("to").path, d.problems), versions)
    elif "split" in d.value:
        split = _split(d.child("split"), versions)
    else:
        split = tuple((v, 1) for v in versions)
    return Route(
        d.get("match", _match, Match()),
        split,
        pinned,
        d.get("retries", _retries, None),
        d.get("timeout", _duration, None),
    )


def _split(d: _Doc, versions: list[str]) -> tuple[tuple[str, int], ...]:
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
        elif (value := _int(_Doc(weight, w.path, d.problems), 0, 10000)) > 0:
            split.append((str(key), value))
    if not split and all(k in versions and isinstance(w, int) for k, w in d.value.items()):
        d.problem("at least one weight must be greater than 0")
    return tuple(split)


def _match(d: _Doc) -> Match:
    if not d.mapping(("prefix", "path", "headers")):
        return Match()
    if "prefix" in d.value and "path" in d.value:
        d.problem("give either 'prefix' or 'path', not both")
    path = d.get("path", _str, None)
    prefix = None if path else d.get("prefix", _str, "/")
    for key in ("prefix", "path"):
        value = d.value.get(key)
        if isinstance(value, str) and value and not value.startswith("/"):
            d.child(key).problem(f"{value!r} must start with '/'")
    headers: tuple[tuple[str, str], ...] = d.get("headers", _headers, ())
    return Match(prefix, path, headers)


def _headers(d: _Doc) -> tuple[tuple[str, str], ...]:
    if not isinstance(d.value, dict):
        d.problem("must map header names to exact values")
        return ()
    return tuple((str(k).lower(), _str(d.child(k))) for k in d.value)


def _retries(d: _Doc) -> Retries | None:
    if not d.mapping(("attempts", "on", "per_try_timeout"), ("attempts",)):
        return None
    on: tuple[str, ...] = ("5xx", "reset", "connect-failure")
    if "on" in d.value:
        on = tuple(_choice(x, RETRY_ON) for x in d.child("on").items())
    attempts = d.get("attempts", lambda x: _int(x, 1, 10), 1)
    return Retries(attempts, on, d.get("per_try_timeout", _duration, None))


def _policy(d: _Doc) -> Policy:
    if not d.mapping(("lb", "connect_timeout", "circuit_breakers", "outlier_detection")):
        return Policy()
    return Policy(
        d.get("lb", partial(_choice, choices=get_args(LbPolicy)), "round_robin"),
        d.get("connect_timeout", _duration, 1.0),
        d.get("circuit_breakers", _circuit_breakers, None),
        d.get("outlier_detection", _outlier, None),
    )


def _circuit_breakers(d: _Doc) -> CircuitBreakers | None:
    keys = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
    if not d.mapping(keys):
        return None
    return CircuitBreakers(**{k: d.get(k, lambda x: _int(x, 0), None) for k in keys})


def _outlier(d: _Doc) -> OutlierDetection | None:
    counts = ("consecutive_5xx", "consecutive_gateway_failure")
    times = ("interval", "base_ejection_time")
    if not d.mapping((*counts, *times, "max_ejection_percent")):
        return None
    values: dict[str, Any] = {k: d.get(k, lambda x: _int(x, 1), None) for k in counts}
    values |= {k: d.get(k, _duration, None) for k in times}
    values["max_ejection_percent"] = d.get("max_ejection_percent", lambda x: _int(x, 0, 100), None)
    return OutlierDetection(**values)


def _allow(d: _Doc, trust_domain: str) -> tuple[Allow | Unresolved, ...]:
    """SPIFFE IDs (``spiffe://td/path``), prefixes ending in ``/``, or names of services (resolved
    to their identities once every service is known)."""
    allow: list[Allow | Unresolved] = []
    for x in d.items():
        text = _str(x)
        if not text.startswith("spiffe://"):
            if _NAME.match(text):
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
