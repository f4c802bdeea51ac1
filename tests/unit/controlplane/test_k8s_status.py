"""The mesh-policy objects' verdicts (`controlplane.k8s.status.verdicts`), without a server."""

from __future__ import annotations

from k8s_objects import custom

from controlplane.k8s.status import Verdict, verdicts


def by_key(*objects: dict) -> dict[tuple[str, str], dict]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}


def test_each_object_is_accepted_invalid_conflicted_or_without_its_service() -> None:
    good = custom("ServicePolicy", "shop", "a", {"service": "web"})
    second = custom("ServicePolicy", "shop", "b", {"service": "web"})
    orphan = custom("ServicePolicy", "shop", "c", {"service": "gone"})
    bad = custom("ServiceRoute", "shop", "r", {"service": "web", "routes": [{"to": "v9"}]})
    problems = [
        "ServiceRoute shop/r: spec.routes[0].to: the route has no version 'v9' (versions: none)",
        "Service shop/web: something about the Service, not the route",
    ]
    judged = verdicts(
        {"ServicePolicy": by_key(good, second, orphan), "ServiceRoute": by_key(bad)},
        {("shop", "web")},
        problems,
    )
    assert judged == {
        ("ServicePolicy", "shop", "a"): Verdict(True, "Accepted", "applies to Service web"),
        ("ServicePolicy", "shop", "b"): Verdict(
            False, "Conflicted", "ServicePolicy a already applies to Service web"
        ),
        ("ServicePolicy", "shop", "c"): Verdict(
            False,
            "ServiceNotFound",
            "no Service 'gone' in namespace shop that the mesh serves (a ClusterIP Service)",
        ),
        ("ServiceRoute", "shop", "r"): Verdict(
            False, "Invalid", "spec.routes[0].to: the route has no version 'v9' (versions: none)"
        ),
    }
