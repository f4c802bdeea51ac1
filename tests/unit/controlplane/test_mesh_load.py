"""The mesh YAML's validation: the embedded default is valid, and every mistake is named by path."""

from __future__ import annotations

import textwrap

import pytest

from controlplane.mesh import default_mesh_text, load_mesh
from controlplane.mesh.model import Allow, Retries
from meshproxy.errors import ConfigError

BASE = """
mesh: {trust_domain: mesh.local, pq: required}
services:
  - name: greeter
    port: 8080
    versions:
      v1: {endpoints: [{address: 10.0.0.1:9001, locality: {zone: a}, weight: 2}]}
      v2: {endpoints: ["10.0.0.2:9001"]}
    routes:
      - match: {prefix: /api, headers: {x-canary: "yes"}}
        to: v2
      - split: {v1: 90, v2: 10}
        retries: {attempts: 2, on: [5xx, reset], per_try_timeout: 250ms}
        timeout: 5s
    policy:
      lb: least_request
      circuit_breakers: {max_requests: 100}
      outlier_detection: {consecutive_5xx: 5}
    allow: [client, "spiffe://mesh.local/ns/ops/"]
    sidecar: {inbound: 127.0.0.1:15006, app: 127.0.0.1:8080}
  - name: client
    port: 8081
    sidecar: {}
    allow: []
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_mesh(textwrap.dedent(text), source="m.yaml")
    return info.value.problems


def test_the_embedded_default_is_valid_and_describes_two_meshed_services() -> None:
    mesh, _ = load_mesh(default_mesh_text())
    assert [s.name for s in mesh.services] == ["hello", "web"]
    hello = mesh.service("hello")
    assert hello is not None and [g.group for g in hello.sidecars()] == ["hello-v1", "hello-v2"]
    assert all(hello.meshed(v) for v in hello.versions)  # callers reach every version over PQ mTLS
    assert hello.admits("spiffe://mesh.local/ns/demo/sa/web")
    assert mesh.pq == "required"


def test_a_full_service_reads_into_the_model() -> None:
    mesh, doc = load_mesh(BASE)
    greeter = mesh.service("greeter")
    assert greeter is not None and doc["services"][0]["name"] == "greeter"
    assert greeter.identity == "spiffe://mesh.local/ns/default/sa/greeter"
    pinned, split = greeter.routes
    assert pinned.pinned and pinned.split == (("v2", 100),) and pinned.match.headers == (("x-canary", "yes"),)
    assert split.split == (("v1", 90), ("v2", 10)) and split.timeout == 5.0
    assert split.retries == Retries(2, ("5xx", "reset"), 0.25)
    assert greeter.allow == (
        Allow("spiffe://mesh.local/ns/default/sa/client"),
        Allow("spiffe://mesh.local/ns/ops/", prefix=True),
    )
    assert greeter.admits("spiffe://mesh.local/ns/ops/sa/anyone")
    assert not greeter.admits("spiffe://mesh.local/ns/opsx/sa/anyone")
    assert greeter.versions[0].endpoints[0].weight == 2
    assert greeter.policy.lb == "least_request" and greeter.policy.circuit_breakers.max_requests == 100  # type: ignore[union-attr]


def test_without_routes_traffic_splits_evenly_and_allow_defaults_to_the_trust_domain() -> None:
    mesh, _ = load_mesh("mesh: {trust_domain: td.example}\nservices: [{name: a, port: 1, endpoints: []}]")
    service = mesh.services[0]
    assert service.routes[0].split == (("", 1),)
    assert service.allow == (Allow("spiffe://td.example/", prefix=True),)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("port: 8080", "port: 0"), "m.yaml: services[0].port: 0 is out of range 1..65535"),
        (("name: greeter", "name: Greeter"), "m.yaml: services[0].name: 'Greeter' is not a valid name"),
        (("pq: required", "pq: maybe"), "m.yaml: mesh.pq: 'maybe' is not one of: required, preferred, off"),
        (("v1: 90", "v3: 90"), "m.yaml: services[0].routes[1].split.v3: the service has no version 'v3'"),
        (("to: v2", "to: v9"), "m.yaml: services[0].routes[0].to.v9: the service has no version 'v9'"),
        (
            ("10.0.0.1:9001", "backend:9001"),
            "services[0].versions.v1.endpoints[0].address: 'backend' is not an IP",
        ),
        (("attempts: 2", "attempts: 2, tries: 3"), "services[0].routes[1].retries: unknown key 'tries'"),
        (("on: [5xx, reset]", "on: [5xx, sometimes]"), "routes[1].retries.on[1]: 'sometimes' is not one of"),
        (("timeout: 5s", "timeout: soon"), "routes[1].timeout: 'soon' is not a duration"),
        (("lb: least_request", "lb: fastest"), "services[0].policy.lb: 'fastest' is not one of"),
        (("allow: [client,", "allow: [nobody,"), "services[0].allow[0]: no service 'nobody' in this mesh"),
        (
            ("spiffe://mesh.local/ns/ops/", "spiffe://other.td/ns/ops/"),
            "allow[1]: spiffe://other.td/ns/ops/ is outside",
        ),
        (("app: 127.0.0.1:8080", "app: nowhere"), "services[0].sidecar.app: 'nowhere' is not HOST:PORT"),
        (
            ("port: 8081", "port: 8080"),
            "m.yaml: services: port (outbound listeners bind it) 8080 appears more than once",
        ),
        (
            ("name: client", "name: greeter"),
            "m.yaml: services: service name 'greeter' appears more than once",
        ),
        (
            ("split: {v1: 90, v2: 10}", "split: {v1: 0, v2: 0}"),
            "routes[1].split: at least one weight must be greater than 0",
        ),
    ],
)
def test_each_mistake_is_reported_with_its_path(edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in BASE
    found = problems(BASE.replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(BASE.replace("port: 8080", "port: -1").replace("lb: least_request", "lb: x"))
    assert len(found) == 2, found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "m.yaml: (document): the mesh document is empty"),
        ("[1, 2]", "m.yaml: (document): must be a mapping, not list"),
        ("mesh: {}\nservices: {}", "m.yaml: services: must be a list, not dict"),
        ("mesh: {}\nservices: []\nextra: 1", "m.yaml: (document): unknown key 'extra'"),
        ("mesh: {\n", "m.yaml: not valid YAML"),
        (
            "mesh: {}\nservices: [{name: a, port: 1, versions: {}}]",
            "services[0].versions: must be a non-empty mapping",
        ),
        (
            "mesh: {}\nservices: [{name: a, port: 1, endpoints: [], versions: {v1: {}}}]",
            "services[0]: give either 'versions' (each with its endpoints) or 'endpoints', not both",
        ),
        (
            "mesh: {}\nservices: [{name: a, port: 1, sidecar: {}, versions: {v1: {sidecar: {}}}}]",
            "services[0].sidecar: give the sidecar on the service or on its versions, not both",
        ),
        (
            "mesh: {}\nservices: [{name: a, port: 1, sidecar: {inbound: '1.2.3.4:5'}}]",
            "'inbound' and 'app' go together",
        ),
        ("mesh: {trust_domain: 'Bad Domain'}\nservices: []", "m.yaml: mesh.trust_domain:"),
    ],
)
def test_malformed_documents_are_refused_with_a_reason(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("mode", ["off", "preferred", "required"])
def test_pq_takes_every_mode_as_written_off_included(mode: str) -> None:
    # YAML 1.1 reads a bare `off` as false; the mesh format reads YAML 1.2's booleans only.
    mesh, doc = load_mesh(f"mesh: {{pq: {mode}}}\nservices: []")
    assert mesh.pq == mode and doc["mesh"]["pq"] == mode


@pytest.mark.parametrize("on_key", ["on", "'on'", "On"])
def test_yaml_1_1_boolean_words_stay_the_words_written(on_key: str) -> None:
    text = BASE.replace('{x-canary: "yes"}', "{x-canary: yes, x-debug: on, x-trace: no}")
    text = text.replace("retries: {attempts: 2, on:", f"retries: {{attempts: 2, {on_key}:")
    if on_key == "On":
        assert problems(text) == [
            "m.yaml: services[0].routes[1].retries: unknown key 'On'; expected one of: attempts, on, "
            "per_try_timeout"
        ]
        return
    greeter = load_mesh(text)[0].service("greeter")
    assert greeter is not None
    assert greeter.routes[0].match.headers == (("x-canary", "yes"), ("x-debug", "on"), ("x-trace", "no"))
    assert greeter.routes[1].retries == Retries(2, ("5xx", "reset"), 0.25)


def test_true_and_false_are_still_booleans() -> None:
    assert problems("mesh: {pq: false}\nservices: []") == [
        "m.yaml: mesh.pq: False is not one of: required, preferred, off"
    ]
    mesh, _ = load_mesh("mesh: {}\nservices: [{name: a, port: 1, endpoints: [], sidecar: true}]")
    assert mesh.services[0].sidecar is not None
