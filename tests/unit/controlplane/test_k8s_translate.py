"""The cluster's objects as the mesh model (`controlplane.k8s.translate`), without a server."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2
from k8s_objects import custom, endpoint, endpoint_slice, node, pod, service

from controlplane.k8s.translate import (
    Cluster,
    Memo,
    MeshSettings,
    project_node,
    project_pod,
    translate_cluster,
)
from controlplane.mesh import translate
from controlplane.mesh.model import Allow, Locality, Match, Mesh, Retries, Route, Service, Sidecar
from controlplane.xds.snapshot import ENDPOINT

TD = "mesh.local"
SETTINGS = MeshSettings(TD, "required")
WEB = service("shop", "web", "10.96.0.10")


def key(obj: dict) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def cluster(*objects: dict) -> Cluster:
    kinds: dict[str, dict] = {
        "Service": {},
        "EndpointSlice": {},
        "Pod": {},
        "Node": {},
        "ServiceRoute": {},
        "ServicePolicy": {},
        "ServiceAuthorization": {},
        "PostQuantumPolicy": {},
    }
    for obj in objects:
        project = {"Pod": project_pod, "Node": project_node}.get(obj["kind"], lambda o: o)
        kinds[obj["kind"]][key(obj)] = project(obj)
    return Cluster(*kinds.values())


def mesh_of(*objects: dict) -> tuple[Mesh, list[str]]:
    return translate_cluster(cluster(*objects), SETTINGS)


def only(mesh: Mesh) -> Service:
    (s,) = mesh.services
    return s


def addresses(s: Service, version: str = "") -> list[tuple[str, int]]:
    return sorted(e.address for v in s.versions if v.name == version for e in v.endpoints)


def test_a_service_is_named_by_namespace_with_its_vips_ports_and_protocols() -> None:
    ports = [
        {"name": "grpc-api", "port": 9000, "protocol": "TCP"},
        {"name": "web", "port": 80, "appProtocol": "http", "protocol": "TCP"},
        {"name": "db", "port": 5432, "appProtocol": "tcp", "protocol": "TCP"},
        {"name": "other", "port": 7000, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    svc = service("shop", "api", "10.96.0.11", ports)
    svc["spec"]["clusterIPs"] = ["10.96.0.11", "fd00::11"]
    s = only(mesh_of(svc)[0])
    assert (s.name, s.port, s.protocol, s.vips) == ("api.shop", 9000, "grpc", ("10.96.0.11", "fd00::11"))
    assert [(p.port, p.protocol) for p in s.ports] == [
        (9000, "grpc"),
        (80, "http"),
        (5432, "tcp"),
        (7000, None),
    ]
    assert s.identity == "spiffe://mesh.local/ns/shop/sa/default"  # no pods yet
    assert s.allow == (Allow("spiffe://mesh.local/", True),)  # no ServiceAuthorization: the mesh


def test_headless_and_external_name_services_are_not_mesh_services() -> None:
    headless = service("shop", "db", "None")
    external = service("shop", "ext", "10.96.0.12")
    external["spec"]["type"] = "ExternalName"
    assert mesh_of(headless, external, WEB)[0].services == only_web()


def only_web() -> tuple[Service, ...]:
    return mesh_of(WEB)[0].services


def test_ready_endpoints_at_the_slice_port_named_as_the_first_service_port() -> None:
    slices = [
        endpoint_slice(
            "shop",
            "web-a",
            "web",
            [
                endpoint("10.1.0.1"),
                endpoint("10.1.0.2", ready=False),
                endpoint("10.1.0.3", ready=False, terminating=True),
            ],
        ),
        # a second slice repeating one address (a slice being replaced) and another port name
        endpoint_slice("shop", "web-b", "web", [endpoint("10.1.0.1"), endpoint("10.1.0.4")]),
        endpoint_slice("shop", "web-c", "web", [endpoint("10.1.0.9")], port=9999, port_name="metrics"),
        endpoint_slice("shop", "other", "api", [endpoint("10.1.0.8")]),
    ]
    s = only(mesh_of(WEB, *slices)[0])
    assert addresses(s) == [("10.1.0.1", 8080), ("10.1.0.4", 8080)]
    assert s.routes == (Route(Match(), (("", 1),)),)  # one version: scaling leaves the route alone


def test_serving_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    draining = endpoint_slice(
        "shop",
        "web-a",
        "web",
        [
            endpoint("10.1.0.1", ready=False, serving=True, terminating=True),
            endpoint("10.1.0.2", ready=False, serving=False, terminating=True),
        ],
    )
    assert addresses(only(mesh_of(WEB, draining)[0])) == [("10.1.0.1", 8080)]
    draining["endpoints"].append(endpoint("10.1.0.3"))
    assert addresses(only(mesh_of(WEB, draining)[0])) == [("10.1.0.3", 8080)]


def test_no_endpoints_still_routes_to_an_empty_version() -> None:
    s = only(mesh_of(WEB)[0])
    assert [(v.name, v.endpoints) for v in s.versions] == [("", ())]
    assert s.routes == (Route(Match(), (("", 1),)),)


def test_localities_from_the_slice_zone_then_pod_then_node_topology_labels() -> None:
    nodes = [node("n1", region="eu-west", zone="eu-west-1a"), node("n2", region="us-east", zone="us-east-1b")]
    pods = [
        pod("shop", "web-1", node="n1"),
        pod("shop", "web-2", node="n2", labels={"topology.kubernetes.io/region": "ap-south"}),
        pod("shop", "web-3", node="n2"),
    ]
    slice_ = endpoint_slice(
        "shop",
        "web-a",
        "web",
        [
            endpoint("10.1.0.1", "web-1", zone="eu-west-1c", node="n1"),
            endpoint("10.1.0.2", "web-2", node="n2"),
            endpoint("10.1.0.3", "web-3"),  # no nodeName on the slice: the pod's node
        ],
    )
    s = only(mesh_of(WEB, slice_, *pods, *nodes)[0])
    localities = {e.address[0]: e.locality for e in s.versions[0].endpoints}
    assert localities == {
        "10.1.0.1": Locality("eu-west", "eu-west-1c"),
        "10.1.0.2": Locality("ap-south", "us-east-1b"),
        "10.1.0.3": Locality("us-east", "us-east-1b"),
    }
    cla = translate(mesh_of(WEB, slice_, *pods, *nodes)[0])["default"][ENDPOINT]["web.shop"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    assert sorted((g.locality.region, g.locality.zone) for g in cla.endpoints) == [
        ("ap-south", "us-east-1b"),
        ("eu-west", "eu-west-1c"),
        ("us-east", "us-east-1b"),
    ]


def test_injected_pods_give_versions_sidecar_groups_identity_and_a_split_by_endpoint_count() -> None:
    pods = [
        pod("shop", f"web-{i}", service_account="web", labels={"app": "web", "version": v})
        for i, v in enumerate(["v1", "v1", "v1", "v2"])
    ]
    slice_ = endpoint_slice("shop", "web-a", "web", [endpoint(f"10.1.0.{i}", f"web-{i}") for i in range(4)])
    mesh, problems = mesh_of(WEB, slice_, *pods)
    s = only(mesh)
    assert problems == []
    assert s.identity == "spiffe://mesh.local/ns/shop/sa/web"
    assert [(v.name, v.sidecar) for v in s.versions] == [
        ("v1", Sidecar("web-v1.shop", mode="transparent")),
        ("v2", Sidecar("web-v2.shop", mode="transparent")),
    ]
    assert s.routes == (Route(Match(), (("v1", 3), ("v2", 1))),)
    assert set(translate(mesh)) == {"default", "web-v1.shop", "web-v2.shop"}


def test_endpoints_without_a_sidecar_in_a_meshed_version_are_left_out_and_reported() -> None:
    pods = [
        pod("shop", "web-0", service_account="web"),
        pod("shop", "web-1", service_account="web", injected=False),
    ]
    slice_ = endpoint_slice(
        "shop", "web-a", "web", [endpoint("10.1.0.0", "web-0"), endpoint("10.1.0.1", "web-1")]
    )
    mesh, problems = mesh_of(WEB, slice_, *pods)
    assert addresses(only(mesh)) == [("10.1.0.0", 8080)]
    assert problems == [
        "Service shop/web: 1 endpoint(s) of its pods have no sidecar while the others do; they are left out "
        "until injected (callers reach the version over mutual TLS)"
    ]


def test_pods_of_two_service_accounts_are_reported_and_the_first_is_the_identity() -> None:
    pods = [pod("shop", "web-0", service_account="web"), pod("shop", "web-1", service_account="legacy")]
    slice_ = endpoint_slice(
        "shop", "web-a", "web", [endpoint("10.1.0.0", "web-0"), endpoint("10.1.0.1", "web-1")]
    )
    mesh, problems = mesh_of(WEB, slice_, *pods)
    assert only(mesh).identity == "spiffe://mesh.local/ns/shop/sa/legacy"
    assert problems[0].startswith("Service shop/web: its pods run as service accounts legacy, web;")


def test_a_sidecar_group_backs_one_service_the_second_is_left_out() -> None:
    alias = service("shop", "web-alias", "10.96.0.13")
    pods = [pod("shop", "web-0", service_account="web", labels={"app": "web"})]
    slices = [endpoint_slice("shop", s, s, [endpoint("10.1.0.0", "web-0")]) for s in ("web", "web-alias")]
    mesh, problems = mesh_of(WEB, alias, *slices, *pods)
    assert [s.name for s in mesh.services] == ["web.shop"]
    assert problems == [
        "Service shop/web-alias: its pods' sidecar group 'web.shop' already backs web.shop; a sidecar "
        "group backs one Service, so this one is left out"
    ]


def test_a_service_route_defines_versions_by_labels_and_routes() -> None:
    pods = [
        pod("shop", "web-0", labels={"track": "stable"}),
        pod("shop", "web-1", labels={"track": "canary"}),
        pod("shop", "web-2", labels={"track": "other"}),
    ]
    slice_ = endpoint_slice("shop", "web-a", "web", [endpoint(f"10.1.0.{i}", f"web-{i}") for i in range(3)])
    route = custom(
        "ServiceRoute",
        "shop",
        "web",
        {
            "service": "web",
            "versions": [
                {"name": "stable", "labels": {"track": "stable"}},
                {"name": "canary", "labels": {"track": "canary"}},
                {"name": "unused", "labels": {"track": "none"}},
            ],
            "routes": [
                {"match": {"headers": {"X-Canary": "1"}}, "to": "canary"},
                {
                    "match": {"prefix": "/api"},
                    "split": [{"version": "stable", "weight": 90}, {"version": "canary", "weight": 10}],
                    "retries": {"attempts": 2, "on": ["5xx"], "perTryTimeout": "250ms"},
                    "timeout": "2s",
                },
            ],
        },
    )
    mesh, problems = mesh_of(WEB, slice_, route, *pods)
    s = only(mesh)
    assert problems == []
    assert [(v.name, [e.address[0] for e in v.endpoints]) for v in s.versions] == [
        ("stable", ["10.1.0.0"]),
        ("canary", ["10.1.0.1"]),
        ("unused", []),
    ]
    assert s.routes == (
        Route(Match("/", None, (("x-canary", "1"),)), (("canary", 100),), pinned=True),
        Route(Match("/api"), (("stable", 90), ("canary", 10)), False, Retries(2, ("5xx",), 0.25), 2.0),
    )


def test_a_route_naming_an_unknown_version_is_reported_and_the_default_route_kept() -> None:
    route = custom(
        "ServiceRoute",
        "shop",
        "web-route",
        {"service": "web", "versions": [{"name": "v1", "labels": {"v": "1"}}], "routes": [{"to": "v9"}]},
    )
    mesh, problems = mesh_of(WEB, route)
    assert problems == [
        "ServiceRoute shop/web-route: spec.routes[0].to: the route has no version 'v9' (versions: v1)"
    ]
    assert only(mesh).routes == (Route(Match(), (("v1", 1),)),)


def test_policy_authorization_and_post_quantum_objects_apply_to_their_service() -> None:
    policy = custom(
        "ServicePolicy",
        "shop",
        "p",
        {
            "service": "web",
            "loadBalancer": "least_request",
            "connectTimeout": "500ms",
            "circuitBreakers": {"maxRequests": 100},
            "outlierDetection": {"consecutive5xx": 3, "baseEjectionTime": "30s", "maxEjectionPercent": 50},
        },
    )
    authz = custom(
        "ServiceAuthorization",
        "shop",
        "a",
        {
            "service": "web",
            "allow": [
                {"serviceAccount": {"name": "front"}},
                {"serviceAccount": {"name": "ops", "namespace": "tools"}},
                {"identityPrefix": "spiffe://mesh.local/ns/batch/"},
            ],
        },
    )
    pq = custom(
        "PostQuantumPolicy", "shop", "q", {"service": "web", "keyExchange": "preferred", "mlDsa": "required"}
    )
    mesh, problems = mesh_of(WEB, policy, authz, pq)
    s = only(mesh)
    assert (s.policy.lb, s.policy.connect_timeout) == ("least_request", 0.5)
    assert s.policy.circuit_breakers is not None and s.policy.circuit_breakers.max_requests == 100
    outlier = s.policy.outlier_detection
    assert outlier is not None and (outlier.consecutive_5xx, outlier.base_ejection_time) == (3, 30.0)
    assert s.allow == (
        Allow("spiffe://mesh.local/ns/shop/sa/front"),
        Allow("spiffe://mesh.local/ns/tools/sa/ops"),
        Allow("spiffe://mesh.local/ns/batch/", True),
    )
    assert [p.split(": ", 2)[1] for p in problems] == ["spec.keyExchange", "spec.mlDsa"]
    nobody = custom("ServiceAuthorization", "shop", "a", {"service": "web", "allow": []})
    assert only(mesh_of(WEB, nobody)[0]).allow == ()


def test_pods_are_kept_small() -> None:
    big = pod("shop", "web-0", service_account="web", labels={"app": "web"}, node="n1")
    big["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * 10_000
    assert project_pod(big) == {
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": {"meshproxy.io/status": '{"version":1}'},
        },
        "spec": {"serviceAccountName": "web", "nodeName": "n1"},
    }


def test_the_memo_reuses_unchanged_services_and_translates_changed_ones_again() -> None:
    api = service("shop", "api", "10.96.0.11")
    pods = [pod("shop", f"web-{i}", service_account="web", labels={"app": "web"}) for i in range(2)]
    slice_ = endpoint_slice("shop", "web-a", "web", [endpoint("10.1.0.0", "web-0")])
    for i, obj in enumerate((WEB, api, slice_, *pods)):
        obj["metadata"]["resourceVersion"] = str(100 + i)
    memo = Memo()
    first, _ = translate_cluster(cluster(WEB, api, slice_, *pods), SETTINGS, memo)
    # a pod's status (which the store drops) and nothing else: the very same objects
    pods[0]["status"] = {"phase": "Running", "podIP": "10.1.0.0"}
    pods[0]["metadata"]["resourceVersion"] = "200"
    again, _ = translate_cluster(cluster(WEB, api, slice_, *pods), SETTINGS, memo)
    assert all(a is b for a, b in zip(first.services, again.services, strict=True))
    # the slice changes: web is translated again, api is reused
    slice_["endpoints"].append(endpoint("10.1.0.1", "web-1"))
    slice_["metadata"]["resourceVersion"] = "201"
    changed, _ = translate_cluster(cluster(WEB, api, slice_, *pods), SETTINGS, memo)
    assert changed.services[0] is first.services[0]  # api.shop
    assert addresses(changed.services[1]) == [("10.1.0.0", 8080), ("10.1.0.1", 8080)]
    # a pod's labels are read: changing them translates its service again (every watch event
    # is a freshly parsed object, as here)
    pods[1] = pod("shop", "web-1", service_account="web", labels={"app": "web", "version": "v2"})
    relabelled, _ = translate_cluster(cluster(WEB, api, slice_, *pods), SETTINGS, memo)
    assert [v.name for v in relabelled.services[1].versions] == ["", "v2"]
    assert relabelled == translate_cluster(cluster(WEB, api, slice_, *pods), SETTINGS)[0]
