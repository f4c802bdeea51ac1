"""The mesh-policy custom resources read into the mesh model's pieces.

Owns what each CRD kind of `controlplane.k8s.crds` means for one service: a ``ServiceRoute``'s
``versions`` (pod-label subsets, `version_of`) and ``routes`` (`routes`), a ``ServicePolicy``
(`policy`), a ``ServiceAuthorization`` (`allow`), and whether a ``PostQuantumPolicy`` can be
honoured (`pq_problems`). The API server has already checked each spec against the CRD's
schema; what it cannot check (a split naming a version the route does not define, a duration
whose value makes no sense) is reported as ``<Kind> <namespace>/<name>: spec.<path>: <reason>``,
through the mesh loader's `Doc`, and the object is left out (the service keeps its defaults).

Must not depend on: a Kubernetes client, asyncio, the watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from controlplane.k8s.annotations import spiffe_id
from controlplane.mesh.doc import Doc, choice, duration, integer, string
from controlplane.mesh.load import RETRY_ON
from controlplane.mesh.model import (
    Allow,
    CircuitBreakers,
    LbPolicy,
    Match,
    OutlierDetection,
    Policy,
    PqMode,
    Retries,
    Route,
)


def spec_of(kind: str, obj: Mapping[str, Any], problems: list[str]) -> Doc:
    """A cursor on ``obj``'s ``spec`` whose problems read ``Kind ns/name: spec.x: ...``."""
    metadata = obj.get("metadata") or {}
    where = f"{kind} {metadata.get('namespace', '')}/{metadata.get('name', '')}: spec"
    return Doc(obj.get("spec") or {}, where, problems)


def version_of(route: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str | None:
    """The first of the ServiceRoute's versions whose labels the pod has; None when it has
    versions and the pod is in none of them; ``""`` when there is no ServiceRoute versioning."""
    versions = ((route or {}).get("spec") or {}).get("versions") or []
    if not versions:
        return ""
    for version in versions:
        wanted = version.get("labels") or {}
        if wanted and all(labels.get(k) == v for k, v in wanted.items()):
            return str(version.get("name", ""))
    return None


def routes(obj: Mapping[str, Any], versions: list[str], problems: list[str]) -> tuple[Route, ...] | None:
    """The ServiceRoute's routes (None, with problems, when one is unusable)."""
    found: list[str] = []
    spec = spec_of("ServiceRoute", obj, found)
    out = tuple(_route(r, versions) for r in _items(spec, "routes"))
    problems.extend(found)
    return None if found else out


def _route(d: Doc, versions: list[str]) -> Route:
    pinned = isinstance(d.value, dict) and "to" in d.value
    if pinned:
        split = [(_version(d.child("to"), versions), 100)]
    elif isinstance(d.value, dict) and "split" in d.value:
        split = [
            (_version(s.child("version"), versions), integer(s.child("weight"), 0, 10000))
            for s in d.child("split").items()
        ]
    else:
        split = [(v, 1) for v in versions]
    kept = tuple((v, w) for v, w in split if w > 0)
    if not kept:
        d.problem("every weight is 0: at least one version must take traffic")
    retries = d.get("retries", _retries, None)
    return Route(d.get("match", _match, Match()), kept, pinned, retries, d.get("timeout", duration, None))


def _version(d: Doc, versions: list[str]) -> str:
    name = string(d)
    if name and name not in versions:
        d.problem(
            f"the route has no version {name!r} (versions: {', '.join(v for v in versions if v) or 'none'})"
        )
    return name


def _items(d: Doc, key: str) -> list[Doc]:
    empty: list[Doc] = []
    return d.get(key, Doc.items, empty)


def _headers(d: Doc) -> tuple[tuple[str, str], ...]:
    return tuple((str(k).lower(), str(v)) for k, v in d.value.items())


def _match(d: Doc) -> Match:
    none: tuple[tuple[str, str], ...] = ()
    headers = d.get("headers", _headers, none)
    path = d.get("path", string, None)
    return Match(None if path else d.get("prefix", string, "/"), path, headers)


def _retries(d: Doc) -> Retries:
    on = tuple(choice(x, RETRY_ON) for x in _items(d, "on")) or ("5xx", "reset", "connect-failure")
    return Retries(
        d.get("attempts", lambda x: integer(x, 1, 10), 1), on, d.get("perTryTimeout", duration, None)
    )


def policy(obj: Mapping[str, Any], problems: list[str]) -> Policy | None:
    found: list[str] = []
    spec = spec_of("ServicePolicy", obj, found)
    out = Policy(
        spec.get("loadBalancer", lambda x: choice(x, get_args(LbPolicy)), "round_robin"),
        spec.get("connectTimeout", duration, 1.0),
        spec.get("circuitBreakers", _breakers, None),
        spec.get("outlierDetection", _outlier, None),
    )
    problems.extend(found)
    return None if found else out


_BREAKERS = {
    "maxConnections": "max_connections",
    "maxPendingRequests": "max_pending_requests",
    "maxRequests": "max_requests",
    "maxRetries": "max_retries",
}
_OUTLIER_COUNTS = {
    "consecutive5xx": "consecutive_5xx",
    "consecutiveGatewayFailure": "consecutive_gateway_failure",
}
_OUTLIER_TIMES = {"interval": "interval", "baseEjectionTime": "base_ejection_time"}


def _breakers(d: Doc) -> CircuitBreakers:
    return CircuitBreakers(**{ours: d.get(theirs, integer, None) for theirs, ours in _BREAKERS.items()})


def _outlier(d: Doc) -> OutlierDetection:
    values: dict[str, Any] = {
        ours: d.get(theirs, lambda x: integer(x, 1), None) for theirs, ours in _OUTLIER_COUNTS.items()
    }
    values |= {ours: d.get(theirs, duration, None) for theirs, ours in _OUTLIER_TIMES.items()}
    values["max_ejection_percent"] = d.get("maxEjectionPercent", lambda x: integer(x, 0, 100), None)
    return OutlierDetection(**values)


def allow(obj: Mapping[str, Any], trust_domain: str, problems: list[str]) -> tuple[Allow, ...] | None:
    """The callers a ServiceAuthorization admits (an empty list: nobody)."""
    found: list[str] = []
    spec = spec_of("ServiceAuthorization", obj, found)
    namespace = str((obj.get("metadata") or {}).get("namespace", ""))
    out = []
    for entry in _items(spec, "allow"):
        value = entry.value if isinstance(entry.value, dict) else {}
        if "serviceAccount" in value:
            account = entry.child("serviceAccount")
            name = account.get("name", string, "")
            out.append(Allow(spiffe_id(trust_domain, account.get("namespace", string, namespace), name)))
        elif "identity" in value:
            out.append(Allow(_in_domain(entry.child("identity"), trust_domain)))
        elif "identityPrefix" in value:
            out.append(Allow(_in_domain(entry.child("identityPrefix"), trust_domain), prefix=True))
        else:
            entry.problem("give one of serviceAccount, identity, identityPrefix")
    problems.extend(found)
    return None if found else tuple(out)


def _in_domain(d: Doc, trust_domain: str) -> str:
    text = string(d)
    if text and not text.startswith(f"spiffe://{trust_domain}/"):
        d.problem(f"{text} is outside the mesh's trust domain {trust_domain!r}")
    return text


def pq_problems(obj: Mapping[str, Any], mesh_pq: PqMode) -> list[str]:
    """What of a PostQuantumPolicy the mesh model cannot honour: the key exchange is one policy
    for the whole mesh (``--pq``) and ML-DSA identities are the CA's choice (``--ca-algorithm``),
    so a policy asking for something else is refused, by name, rather than silently ignored."""
    found: list[str] = []
    spec = spec_of("PostQuantumPolicy", obj, found)
    exchange = spec.get("keyExchange", string, "required")
    if exchange != mesh_pq:
        spec.child("keyExchange").problem(
            f"{exchange!r} differs from the mesh's key exchange {mesh_pq!r}; a per-service key exchange "
            "is not implemented yet (set the mesh's with 'controlplane serve --pq')"
        )
    if spec.get("mlDsa", string, "optional") == "required":
        spec.child("mlDsa").problem(
            "'required' is not enforced per service yet; run the CA with --ca-algorithm ml-dsa-65 so every "
            "identity is ML-DSA-65"
        )
    return found
