"""The mesh-policy CRDs: valid CRDs for every Kubernetes version, schemas that take the mesh's
policy and refuse what it refuses, field for field with the mesh model."""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest

from controlplane.k8s import crds, validate
from controlplane.mesh import model
from controlplane.mesh.load import RETRY_ON


def _schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in crds.custom_resource_definitions() if c["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _object(kind: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {"apiVersion": crds.API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    return obj | ({"status": status} if status else {})


def _errors(kind: str, obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema(kind), format_checker=jsonschema.FormatChecker())
    return [e.message for e in validator.iter_errors(obj)]


def test_the_crds_are_valid_for_every_kubernetes_version_from_1_29() -> None:
    assert validate.versions()[0] == "1.29" and len(validate.versions()) >= 2
    assert validate.problems(crds.custom_resource_definitions()) == []


def test_the_validation_catches_what_the_api_server_would_refuse() -> None:
    broken = crds.custom_resource_definitions()[0]
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["propertiez"] = {}
    broken["spec"]["names"]["shortNames"] = "msroute"
    found = validate.problems([broken], ["1.29"])
    assert any("propertiez" in p for p in found)
    assert any("spec.names.shortNames: 'msroute' is not of type 'array'" in p for p in found), found


ROUTE = {
    "service": "hello",
    "versions": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    "routes": [
        {
            "match": {"prefix": "/api", "headers": {"x-canary": "1"}},
            "split": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
            "retries": {"attempts": 2, "on": ["reset", "connect-failure"], "perTryTimeout": "250ms"},
            "timeout": "5s",
        },
        {"to": "v1"},
    ],
}
POLICY = {
    "service": "hello",
    "loadBalancer": "least_request",
    "connectTimeout": "1s",
    "circuitBreakers": {
        "maxConnections": 100,
        "maxPendingRequests": 10,
        "maxRequests": 1000,
        "maxRetries": 3,
    },
    "outlierDetection": {
        "consecutive5xx": 5,
        "consecutiveGatewayFailure": 3,
        "interval": "10s",
        "baseEjectionTime": "30s",
        "maxEjectionPercent": 50,
    },
}
AUTHZ = {
    "service": "hello",
    "allow": [
        {"serviceAccount": {"name": "web"}},
        {"serviceAccount": {"name": "ops", "namespace": "tools"}},
        {"identity": "spiffe://mesh.local/ns/shop/sa/cart"},
        {"identityPrefix": "spiffe://mesh.local/ns/batch/"},
    ],
}
PQ = {"service": "hello", "keyExchange": "required", "mlDsa": "required"}
STATUS = {
    "observedGeneration": 3,
    "conditions": [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Valid",
            "message": "translated into the mesh",
            "lastTransitionTime": "2026-12-08T02:50:00Z",
            "observedGeneration": 3,
        }
    ],
}


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("ServiceRoute", ROUTE),
        ("ServicePolicy", POLICY),
        ("ServiceAuthorization", AUTHZ),
        ("PostQuantumPolicy", PQ),
    ],
)
def test_each_kind_takes_a_full_policy_with_status(kind: str, spec: dict[str, Any]) -> None:
    assert _errors(kind, _object(kind, spec, STATUS)) == []


@pytest.mark.parametrize(
    ("kind", "spec", "wrong"),
    [
        ("ServiceRoute", {"service": "Hello_World"}, "does not match"),
        ("ServiceRoute", ROUTE | {"routes": [{"timeout": "5 seconds"}]}, "does not match"),
        ("ServiceRoute", ROUTE | {"routes": [{"retries": {"attempts": 11}}]}, "maximum"),
        (
            "ServiceRoute",
            ROUTE | {"routes": [{"retries": {"attempts": 1, "on": ["sometimes"]}}]},
            "is not one of",
        ),
        ("ServiceRoute", ROUTE | {"routes": [{"match": {"prefix": "api"}}]}, "does not match"),
        ("ServicePolicy", POLICY | {"loadBalancer": "fastest"}, "is not one of"),
        ("ServicePolicy", POLICY | {"outlierDetection": {"maxEjectionPercent": 101}}, "maximum"),
        ("ServiceAuthorization", {"service": "hello"}, "'allow' is a required property"),
        ("ServiceAuthorization", {"service": "hello", "allow": [{"identity": "web"}]}, "does not match"),
        ("PostQuantumPolicy", PQ | {"keyExchange": "hybrid"}, "is not one of"),
        ("PostQuantumPolicy", PQ | {"mlDsa": "yes"}, "is not one of"),
        ("PostQuantumPolicy", {"keyExchange": "required"}, "'service' is a required property"),
    ],
)
def test_each_kind_refuses_what_the_mesh_refuses(kind: str, spec: dict[str, Any], wrong: str) -> None:
    errors = _errors(kind, _object(kind, spec))
    assert any(wrong in e for e in errors), errors


def test_the_exclusive_fields_carry_cel_rules_for_the_api_server() -> None:
    text = str(crds.custom_resource_definitions())
    assert "has(self.prefix), has(self.path)" in text
    assert "has(self.split), has(self.to)" in text
    assert (
        "has(self.serviceAccount), has(self.identity), has(self.identityPrefix)].filter(x, x).size() == 1"
        in text
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@pytest.mark.parametrize(
    ("cls", "path"),
    [
        (model.CircuitBreakers, ("circuitBreakers",)),
        (model.OutlierDetection, ("outlierDetection",)),
    ],
)
def test_the_policy_fields_are_the_mesh_models(cls: type, path: tuple[str, ...]) -> None:
    schema = _schema("ServicePolicy")["properties"]["spec"]
    for key in path:
        schema = schema["properties"][key]
    fields = {_camel(f.name) for f in dataclasses.fields(cls)}
    assert set(schema["properties"]) == fields


def test_the_enums_are_the_mesh_models() -> None:
    spec = _schema("ServicePolicy")["properties"]["spec"]["properties"]
    assert tuple(spec["loadBalancer"]["enum"]) == model.LbPolicy.__args__  # type: ignore[attr-defined]
    pq = _schema("PostQuantumPolicy")["properties"]["spec"]["properties"]["keyExchange"]["enum"]
    assert tuple(pq) == model.PqMode.__args__  # type: ignore[attr-defined]
    route = _schema("ServiceRoute")["properties"]["spec"]["properties"]["routes"]["items"]["properties"]
    assert tuple(route["retries"]["properties"]["on"]["items"]["enum"]) == RETRY_ON
    retries = {_camel(f.name) for f in dataclasses.fields(model.Retries)}
    assert set(route["retries"]["properties"]) == retries
