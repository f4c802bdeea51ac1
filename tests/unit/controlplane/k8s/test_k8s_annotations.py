"""The meshproxy.io/ annotations: every value parsed, every bad one named, the shared conventions."""

from __future__ import annotations

import pytest

from controlplane.k8s import annotations as names
from controlplane.k8s.errors import AnnotationError


def test_every_name_is_in_the_one_documented_namespace() -> None:
    values = [
        v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and v.startswith("meshproxy")
    ]
    assert len(values) >= 15
    assert all(v.startswith(names.PREFIX) or v.startswith("meshproxy-") for v in values)
    documented = names.__doc__ or ""
    for value in values:
        if value.startswith(names.PREFIX):
            assert value in documented, f"{value} is not in the module's documentation"


def test_no_annotations_mean_the_defaults() -> None:
    assert names.read_settings({}) == names.Settings()


def test_every_annotation_is_read() -> None:
    settings = names.read_settings(
        {
            names.GROUP: "shop-v2",
            names.PQ: "preferred",
            names.CONCURRENCY: "4",
            names.CNI: "True",
            names.EXCLUDE_INBOUND_PORTS: "8081, 9000",
            names.EXCLUDE_OUTBOUND_PORTS: "5432",
            names.EXCLUDE_INBOUND_CIDRS: "10.1.0.0/16",
            names.EXCLUDE_OUTBOUND_CIDRS: "169.254.169.254,fd00::/8",
            names.PROXY_CPU: "250m",
            names.PROXY_MEMORY: "64Mi",
            names.PROXY_CPU_LIMIT: "1",
            names.PROXY_MEMORY_LIMIT: "1e9",
            "unrelated.example/annotation": "kept out of it",
        }
    )
    assert settings == names.Settings(
        group="shop-v2",
        pq="preferred",
        concurrency=4,
        cni=True,
        exclude_inbound_ports=(8081, 9000),
        exclude_outbound_ports=(5432,),
        exclude_inbound_cidrs=("10.1.0.0/16",),
        exclude_outbound_cidrs=("169.254.169.254/32", "fd00::/8"),
        requests=(("cpu", "250m"), ("memory", "64Mi")),
        limits=(("cpu", "1"), ("memory", "1e9")),
    )


def test_every_bad_value_is_reported_at_once_naming_its_annotation() -> None:
    bad = {
        names.PQ: "yes",
        names.CONCURRENCY: "0",
        names.CNI: "maybe",
        names.EXCLUDE_INBOUND_PORTS: "80,70000",
        names.EXCLUDE_OUTBOUND_PORTS: "*",
        names.EXCLUDE_OUTBOUND_CIDRS: "10.9.0.1/16",
        names.PROXY_MEMORY: "lots",
        names.GROUP: "has space",
    }
    with pytest.raises(AnnotationError) as caught:
        names.read_settings(bad)
    problems = caught.value.problems
    assert len(problems) == len(bad)
    for annotation in bad:
        assert any(p.startswith(f'metadata.annotations["{annotation}"]: ') for p in problems), annotation
    assert any("'70000' is not a TCP port" in p for p in problems)
    assert any("'*' is not allowed" in p for p in problems)


@pytest.mark.parametrize(
    ("labels", "notes", "group"),
    [
        ({}, {}, "web-sa.shop"),
        ({"app": "web"}, {}, "web.shop"),
        ({"app": "web", "version": "v2"}, {}, "web-v2.shop"),
        (
            {"app.kubernetes.io/name": "store", "app": "web", "app.kubernetes.io/version": "3"},
            {},
            "store-3.shop",
        ),
        ({"app": "web", "version": "v2"}, {names.GROUP: "mine"}, "mine"),
    ],
)
def test_the_sidecar_group_of_a_pod(labels: dict[str, str], notes: dict[str, str], group: str) -> None:
    assert names.sidecar_group("shop", labels, notes, "web-sa") == group


def test_identity_and_controlplane_names() -> None:
    assert names.spiffe_id("mesh.local", "shop", "web") == "spiffe://mesh.local/ns/shop/sa/web"
    assert names.spiffe_id("mesh.local", "shop", "") == "spiffe://mesh.local/ns/shop/sa/default"
    assert names.controlplane_host() == "meshproxy-controlplane.meshproxy-system.svc"


@pytest.mark.parametrize(
    ("labels", "notes", "out"),
    [
        ({}, {}, False),
        ({names.INJECT: "true"}, {}, False),
        ({names.INJECT: "false"}, {}, True),
        ({}, {names.INJECT: "False"}, True),
    ],
)
def test_opting_out(labels: dict[str, str], notes: dict[str, str], out: bool) -> None:
    assert names.opted_out(labels, notes) is out
