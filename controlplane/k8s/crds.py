"""The mesh-policy CustomResourceDefinitions, generated from one schema source (this module).

Owns the Kubernetes form of the mesh's per-service policy: four kinds in the API group
``meshproxy.io``, version ``v1alpha1``, each namespaced, each naming the Kubernetes Service it
applies to in ``spec.service`` (same namespace), each with a ``status`` subresource holding
``observedGeneration`` and standard ``conditions`` (metav1.Condition: ``Accepted`` when the spec is
valid and its references resolve, ``Programmed`` once the sidecars have it):

- ``ServiceRoute``: versions (pod-label subsets) and HTTP routes: match (path prefix or exact
  path, exact headers), a weighted ``split`` across versions or one version (``to``), retries
  (attempts, Envoy's retry-on conditions, per-try timeout) and a request timeout
  (the mesh YAML's ``versions`` and ``routes``);
- ``ServicePolicy``: load balancer, connect timeout, circuit breakers and outlier detection
  (the mesh YAML's ``policy``);
- ``ServiceAuthorization``: the callers the service admits, by service account, SPIFFE ID or
  SPIFFE ID prefix (the mesh YAML's ``allow``); an empty list admits nobody;
- ``PostQuantumPolicy``: the service's key exchange (hybrid X25519MLKEM768 ``required`` or
  ``preferred``, or ``off``) and whether its callers and the service must hold ML-DSA-65
  identities (``mlDsa: required``).

Field names are Kubernetes' camelCase spellings of the mesh YAML's (`controlplane.mesh.load`);
durations are the same strings (``250ms``, ``1s``, ``2m``). The API server validates the
schemas (structural, with CEL rules where one field excludes another); the Kubernetes source
translates accepted objects into the mesh model. `custom_resource_definitions` renders the CRDs
that ``meshctl install`` prints.

Must not depend on: a Kubernetes client, grpc, asyncio, the mesh loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.mesh.load import RETRY_ON

GROUP = "meshproxy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
CONDITION_TYPES = ("Accepted", "Programmed")
CATEGORY = "meshproxy"  # ``kubectl get meshproxy`` lists every kind

Schema = dict[str, Any]

# ----------------------------------------------------------------------------- building blocks


def _obj(
    description: str, properties: Schema, required: tuple[str, ...] = (), *, rules: tuple[Schema, ...] = ()
) -> Schema:
    """An object; ``rules`` are CEL validations the API server evaluates."""
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = list(required)
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def _at_most_one(*fields: str) -> Schema:
    present = ", ".join(f"has(self.{f})" for f in fields)
    return {
        "rule": f"[{present}].filter(x, x).size() <= 1",
        "message": f"give only one of {', '.join(fields)}",
    }


def _exactly_one(*fields: str) -> Schema:
    present = ", ".join(f"has(self.{f})" for f in fields)
    return {
        "rule": f"[{present}].filter(x, x).size() == 1",
        "message": f"give exactly one of {', '.join(fields)}",
    }


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description} | extra


def _integer(description: str, minimum: int, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "format": "int32", "description": description, "minimum": minimum}
    return schema if maximum is None else schema | {"maximum": maximum}


def _array(description: str, items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": items} | extra


def _enum(description: str, values: tuple[str, ...], default: str | None = None) -> Schema:
    schema = _string(description, enum=list(values))
    return schema if default is None else schema | {"default": default}


def _duration(description: str) -> Schema:
    # The mesh YAML's duration (controlplane.mesh.doc.duration).
    return _string(description, pattern=r"^\d+(\.\d+)?(ms|s|m|h)$")


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SERVICE = _string(
    "the Kubernetes Service (in this namespace) this applies to", pattern=DNS_LABEL, maxLength=63
)
SPIFFE_ID = _string("a SPIFFE ID, spiffe://<trust domain>/<path>", pattern=r"^spiffe://[^/]+/.+$")
LB_POLICIES = ("round_robin", "least_request", "random", "ring_hash", "maglev")
PQ_KEY_EXCHANGE = ("required", "preferred", "off")

# ----------------------------------------------------------------------------- the kinds' specs

_MATCH = _obj(
    "which requests the route takes (all conditions must hold); absent: every request",
    {
        "prefix": _string("path prefix, starting with /", pattern="^/"),
        "path": _string("exact path, starting with /", pattern="^/"),
        "headers": {
            "type": "object",
            "description": "header name to exact value",
            "additionalProperties": {"type": "string"},
        },
    },
    rules=(_at_most_one("prefix", "path"),),
)
_ROUTE = _obj(
    "an HTTP route of the service",
    {
        "match": _MATCH,
        "split": _array(
            "weighted versions; the weights are relative",
            _obj(
                "one version's share",
                {
                    "version": _string("a version named in spec.versions"),
                    "weight": _integer("relative weight", 0, 10000),
                },
                ("version", "weight"),
            ),
            minItems=1,
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
        ),
        "to": _string("every matching request goes to this version, whatever traffic shifts say"),
        "retries": _obj(
            "retry policy",
            {
                "attempts": _integer("retries after the first try", 1, 10),
                "on": _array("Envoy's retry-on conditions", _enum("a retry-on condition", RETRY_ON)),
                "perTryTimeout": _duration("timeout of each try"),
            },
            ("attempts",),
        ),
        "timeout": _duration("the whole request's timeout, retries included"),
    },
    rules=(_at_most_one("split", "to"),),
)
SERVICE_ROUTE = _obj(
    "versions and HTTP routes of a service",
    {
        "service": SERVICE,
        "versions": _array(
            "subsets of the service's pods, by label",
            _obj(
                "one version",
                {
                    "name": _string("the version's name", pattern=DNS_LABEL, maxLength=63),
                    "labels": {
                        "type": "object",
                        "description": "pod labels every pod of this version has",
                        "additionalProperties": {"type": "string"},
                        "minProperties": 1,
                    },
                },
                ("name", "labels"),
            ),
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
        "routes": _array("the routes, first match wins", _ROUTE),
    },
    ("service",),
)
SERVICE_POLICY = _obj(
    "how callers connect to a service's endpoints",
    {
        "service": SERVICE,
        "loadBalancer": _enum("load-balancing policy", LB_POLICIES, "round_robin"),
        "connectTimeout": _duration("TCP connect timeout (default 1s)"),
        "circuitBreakers": _obj(
            "limits per caller sidecar (Envoy's circuit breakers, default priority)",
            {
                "maxConnections": _integer("connections", 0),
                "maxPendingRequests": _integer("requests waiting for a connection", 0),
                "maxRequests": _integer("requests in flight", 0),
                "maxRetries": _integer("retries in flight", 0),
            },
        ),
        "outlierDetection": _obj(
            "ejecting failing endpoints",
            {
                "consecutive5xx": _integer("5xx responses in a row that eject", 1),
                "consecutiveGatewayFailure": _integer("502/503/504 in a row that eject", 1),
                "interval": _duration("between ejection sweeps"),
                "baseEjectionTime": _duration("first ejection's length"),
                "maxEjectionPercent": _integer("most endpoints ejected at once", 0, 100),
            },
        ),
    },
    ("service",),
)
SERVICE_AUTHORIZATION = _obj(
    "who may call a service",
    {
        "service": SERVICE,
        "allow": _array(
            "the callers admitted; empty: nobody",
            _obj(
                "one caller: exactly one of serviceAccount, identity, identityPrefix",
                {
                    "serviceAccount": _obj(
                        "every pod running as this service account",
                        {
                            "name": _string("service account", pattern=DNS_LABEL),
                            "namespace": _string("its namespace (default: this one)", pattern=DNS_LABEL),
                        },
                        ("name",),
                    ),
                    "identity": SPIFFE_ID,
                    "identityPrefix": _string(
                        "every SPIFFE ID below this one, ending in /", pattern=r"^spiffe://[^/]+/(.*/)?$"
                    ),
                },
                rules=(_exactly_one("serviceAccount", "identity", "identityPrefix"),),
            ),
        ),
    },
    ("service", "allow"),
)
POST_QUANTUM_POLICY = _obj(
    "the post-quantum requirements of a service's mutual TLS",
    {
        "service": SERVICE,
        "keyExchange": _enum(
            "required: X25519MLKEM768 only, classical peers refused; preferred: X25519MLKEM768, "
            "then X25519; off: classical",
            PQ_KEY_EXCHANGE,
            "required",
        ),
        "mlDsa": _enum(
            "required: the service and its callers must present ML-DSA-65 certificates",
            ("required", "optional"),
            "optional",
        ),
    },
    ("service",),
)

# ----------------------------------------------------------------------------- status


REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"  # metav1.Condition's
_CONDITION = _obj(
    "metav1.Condition",
    {
        "type": _string("Accepted or Programmed", maxLength=316),
        "status": _enum("status", ("True", "False", "Unknown")),
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": _string("when status last changed", format="date-time"),
        "reason": _string(
            "CamelCase reason", maxLength=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
        "message": _string("for humans", maxLength=32768),
    },
    ("type", "status", "lastTransitionTime", "reason", "message"),
)
STATUS = _obj(
    "what the controlplane made of the spec",
    {
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "conditions": _array(
            "Accepted, Programmed",
            _CONDITION,
            maxItems=8,
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    },
)


@dataclass(frozen=True, slots=True)
class Kind:
    """One custom resource kind: its names and its spec's schema."""

    kind: str
    plural: str
    short_name: str
    spec: Schema

    @property
    def name(self) -> str:
        """The CRD's ``metadata.name``."""
        return f"{self.plural}.{GROUP}"


KINDS = (
    Kind("ServiceRoute", "serviceroutes", "msroute", SERVICE_ROUTE),
    Kind("ServicePolicy", "servicepolicies", "mspolicy", SERVICE_POLICY),
    Kind("ServiceAuthorization", "serviceauthorizations", "msauthz", SERVICE_AUTHORIZATION),
    Kind("PostQuantumPolicy", "postquantumpolicies", "mspq", POST_QUANTUM_POLICY),
)


ACCEPTED = '.status.conditions[?(@.type=="Accepted")].status'


def custom_resource_definition(kind: Kind) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CRD of ``kind``."""
    schema = _obj(
        f"{kind.kind}: {kind.spec['description']}",
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": kind.spec,
            "status": STATUS,
        },
        ("spec",),
    )
    columns = [
        {"name": "Service", "type": "string", "jsonPath": ".spec.service"},
        {
            "name": "Accepted",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Accepted")].status',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": {"app.kubernetes.io/part-of": "meshproxy"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def custom_resource_definitions() -> list[dict[str, Any]]:
    """Every CRD, in `KINDS` order."""
    return [custom_resource_definition(kind) for kind in KINDS]
