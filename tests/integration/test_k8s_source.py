"""The Kubernetes source against a local API server (`k8s_api.FakeKubeApi`, over HTTPS):
list then watch with resourceVersion, bookmarks, relist on 410 Gone, back-off, paging, kinds
not served; the source publishing the cluster into the snapshot cache and pushing changes;
``controlplane serve --kubernetes`` as a process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from k8s_objects import NODES, PODS, SERVICES, SLICES, custom, endpoint, endpoint_slice, node, pod, service

from controlplane.app import ConfigEvent, ControlPlane
from controlplane.cli import main as controlplane_main
from controlplane.k8s.api import Api
from controlplane.k8s.source import CUSTOM, KubernetesSource
from controlplane.k8s.translate import MeshSettings
from controlplane.k8s.watch import PAGE_SIZE, Backoff, Reflector, Resource
from controlplane.tokens import Grant, append_token, new_token
from controlplane.xds import SnapshotCache
from controlplane.xds.snapshot import ENDPOINT

from .controlplane_harness import REPO
from .harness import eventually
from .k8s_api import FakeKubeApi

STEP = 5.0


@contextlib.asynccontextmanager
async def reflecting(
    path: str, fake: FakeKubeApi, backoff: Backoff | None = None
) -> AsyncIterator[Reflector]:
    api = await Api.connect(fake.kubeconfig())
    reflector = Reflector(api, Resource("Thing", path), lambda _: None, rng=random.Random(7), backoff=backoff)
    task = asyncio.create_task(reflector.run())
    try:
        async with asyncio.timeout(STEP):
            await reflector.synced.wait()
        yield reflector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


def names(reflector: Reflector) -> list[str]:
    return sorted(name for _, name in reflector.store.objects)


async def test_lists_then_watches_from_the_lists_resource_version_and_follows_bookmarks() -> None:
    async with FakeKubeApi() as fake:
        for name in ("a", "b"):
            fake.put(SERVICES, service("shop", name, "10.96.0.1"))
        async with reflecting(SERVICES, fake) as reflector:
            assert names(reflector) == ["a", "b"]
            listed_at = reflector.store.resource_version
            await eventually(lambda: fake.open_watches(SERVICES) == 1, STEP, "the watch")
            (watch,) = fake.watches(SERVICES)
            assert watch["resourceVersion"] == listed_at and watch["allowWatchBookmarks"] == "true"
            assert 300 <= int(watch["timeoutSeconds"]) < 600
            fake.put(SERVICES, service("shop", "c", "10.96.0.3"))
            deleted_at = fake.delete(SERVICES, "shop", "a")
            await eventually(lambda: names(reflector) == ["b", "c"], STEP, "the watch events")
            assert reflector.store.resource_version == str(deleted_at)
            fake.version += 5  # other kinds moved on: a bookmark carries the newer version
            fake.bookmark(SERVICES)
            await eventually(
                lambda: reflector.store.resource_version == str(fake.version), STEP, "the bookmark"
            )
            fake.end_watches(SERVICES)  # a timeoutSeconds expiry: watch again, from the bookmark
            await eventually(lambda: len(fake.watches(SERVICES)) == 2, STEP, "the second watch")
            assert fake.watches(SERVICES)[1]["resourceVersion"] == str(fake.version)
            assert len(fake.lists(SERVICES)) == 1 and reflector.lists == 1


async def test_relists_on_410_gone_and_sees_what_the_lost_events_changed() -> None:
    async with FakeKubeApi() as fake:
        fake.put(SERVICES, service("shop", "a", "10.96.0.1"))
        async with reflecting(SERVICES, fake) as reflector:
            await eventually(lambda: fake.open_watches(SERVICES) == 1, STEP, "the watch")
            # changes the watch never delivers, then compaction: the watch gets ERROR 410
            fake.lose_events(SERVICES, [service("shop", "z", "10.96.0.26")])
            fake.expire(SERVICES)
            await eventually(lambda: reflector.lists == 2, STEP, "the relist")
            assert names(reflector) == ["z"] and len(fake.lists(SERVICES)) == 2
            # the watch resumes from the relist's resourceVersion, never the expired one again
            await eventually(lambda: len(fake.watches(SERVICES)) == 2, STEP, "the watch after the relist")
            assert (
                fake.watches(SERVICES)[1]["resourceVersion"]
                == reflector.store.resource_version
                == str(fake.version)
            )


async def test_a_410_answer_to_the_watch_request_relists_at_once() -> None:
    async with FakeKubeApi() as fake:
        fake.put(SERVICES, service("shop", "a", "10.96.0.1"))
        async with reflecting(SERVICES, fake) as reflector:
            await eventually(lambda: fake.open_watches(SERVICES) == 1, STEP, "the watch")
            fake.fail(SERVICES, 410)
            fake.end_watches(SERVICES)
            await eventually(lambda: reflector.lists == 2, STEP, "the relist")


async def test_large_lists_are_paged() -> None:
    async with FakeKubeApi() as fake:
        for i in range(PAGE_SIZE * 2 + 7):
            fake.collections[SERVICES].objects[("shop", f"s{i:04}")] = service(
                "shop", f"s{i:04}", "10.96.0.1"
            )
        async with reflecting(SERVICES, fake) as reflector:
            assert len(reflector.store.objects) == PAGE_SIZE * 2 + 7
        pages = fake.lists(SERVICES)
        assert [p.get("continue") for p in pages] == [None, str(PAGE_SIZE), str(2 * PAGE_SIZE)]
        assert {p["limit"] for p in pages} == {str(PAGE_SIZE)}


async def test_errors_back_off_then_the_list_and_watch_go_on() -> None:
    async with FakeKubeApi() as fake:
        fake.put(SERVICES, service("shop", "a", "10.96.0.1"))
        fake.fail(SERVICES, 500, times=3)
        backoff = Backoff(base=0.01, cap=0.05)
        async with reflecting(SERVICES, fake, backoff) as reflector:
            assert names(reflector) == ["a"] and len(fake.lists(SERVICES)) == 4
            await eventually(lambda: fake.open_watches(SERVICES) == 1, STEP, "the watch")
            fake.fail(SERVICES, 503)  # the next watch request fails: back off, watch again
            fake.end_watches(SERVICES)
            await eventually(lambda: len(fake.watches(SERVICES)) == 3, STEP, "the watch after the error")
            assert fake.watches(SERVICES)[2]["resourceVersion"] == reflector.store.resource_version
            assert reflector.lists == 1


def test_backoff_is_exponential_with_full_jitter_capped_and_reset() -> None:
    class Top(random.Random):
        def random(self) -> float:
            return 1.0

    backoff = Backoff(base=0.5, cap=4.0)
    assert [backoff.next_delay(Top()) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    rng = random.Random(3)
    delays = [Backoff(base=0.5, cap=4.0, failures=3).next_delay(rng) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays) and len({round(d, 6) for d in delays}) > 150
    backoff.reset()
    assert backoff.next_delay(Top()) == 0.5


async def test_a_kind_not_served_counts_as_listed_and_empty_until_it_is() -> None:
    path = CUSTOM["ServiceRoute"].path
    async with FakeKubeApi() as fake, reflecting(path, fake, Backoff(base=0.01, cap=0.05)) as reflector:
        assert reflector.store.objects == {}
        fake.serve(path)  # the CRD installed
        fake.put(path, custom("ServiceRoute", "shop", "r", {"service": "web"}))
        await eventually(lambda: names(reflector) == ["r"], STEP, "the CRD's objects")


# ----------------------------------------------------------------------------- the source


def shop(fake: FakeKubeApi, replicas: int) -> None:
    """``web`` in ``shop``: ``replicas`` injected pods over two zones, one slice."""
    fake.put(NODES, node("n1", region="eu", zone="eu-1a"))
    fake.put(NODES, node("n2", region="eu", zone="eu-1b"))
    fake.put(SERVICES, service("shop", "web", "10.96.0.10"))
    for i in range(replicas):
        fake.put(
            PODS, pod("shop", f"web-{i}", service_account="web", labels={"app": "web"}, node=f"n{i % 2 + 1}")
        )
    fake.put(SLICES, web_slice(range(replicas)))


def web_slice(ready: range, terminating: range = range(0)) -> dict:
    endpoints = [endpoint(f"10.1.0.{i}", f"web-{i}") for i in ready]
    endpoints += [
        endpoint(f"10.1.0.{i}", f"web-{i}", ready=False, serving=True, terminating=True) for i in terminating
    ]
    return endpoint_slice("shop", "web-abc", "web", endpoints)


def load_assignment(cache: SnapshotCache, group: str = "default") -> endpoint_pb2.ClusterLoadAssignment:
    snapshot = cache.get(group)
    assert snapshot is not None
    cla = snapshot.resources[ENDPOINT]["web.shop"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    return cla


def hosts(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[str, str]]:
    return sorted(
        (e.endpoint.address.socket_address.address, g.locality.zone)
        for g in cla.endpoints
        for e in g.lb_endpoints
    )


@contextlib.asynccontextmanager
async def running_source(
    fake: FakeKubeApi,
) -> AsyncIterator[tuple[KubernetesSource, asyncio.Queue[ConfigEvent]]]:
    api = await Api.connect(fake.kubeconfig())
    control = ControlPlane(SnapshotCache())
    control.start(mesh=False)
    events: asyncio.Queue[ConfigEvent] = asyncio.Queue()
    control.add_listener(events.put_nowait)
    source = KubernetesSource(api, control, MeshSettings("mesh.local"), rng=random.Random(1))
    task = asyncio.create_task(source.run())
    try:
        yield source, events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


async def test_the_source_publishes_the_cluster_once_listed_and_pushes_endpoint_changes() -> None:
    async with FakeKubeApi() as fake:
        shop(fake, 4)
        async with running_source(fake) as (source, events):
            first = await asyncio.wait_for(events.get(), STEP)
            assert (first.kind, first.version) == ("applied", "1")
            cache = source.control.cache
            assert hosts(load_assignment(cache)) == [
                ("10.1.0.0", "eu-1a"),
                ("10.1.0.1", "eu-1b"),
                ("10.1.0.2", "eu-1a"),
                ("10.1.0.3", "eu-1b"),
            ]
            assert set(cache.groups()) == {"default", "web.shop"}
            state = source.control.state
            assert state is not None and state.source == "kubernetes"
            assert "# web.shop vip=10.96.0.10 ports=80 versions=- endpoints=4" in state.text
            # scale down: two pods terminating leave the endpoints at once
            fake.put(SLICES, web_slice(range(2), terminating=range(2, 4)))
            second = await asyncio.wait_for(events.get(), STEP)
            assert second.version == "2"
            assert hosts(load_assignment(cache)) == [("10.1.0.0", "eu-1a"), ("10.1.0.1", "eu-1b")]
            # every pod terminating: the serving ones keep answering while they drain
            fake.put(SLICES, web_slice(range(0), terminating=range(4)))
            await asyncio.wait_for(events.get(), STEP)
            assert len(hosts(load_assignment(cache))) == 4
            # a shift is refused: the cluster owns the routes
            refused = source.control.shift("web.shop", {"": 1})
            assert refused.problems == (
                "the mesh comes from kubernetes: change the routes there (a ServiceRoute)",
            )


async def test_changes_that_leave_the_mesh_equal_publish_nothing() -> None:
    async with FakeKubeApi() as fake:
        shop(fake, 2)
        async with running_source(fake) as (source, events):
            await asyncio.wait_for(events.get(), STEP)
            status = pod("shop", "web-0", service_account="web", labels={"app": "web"}, node="n1")
            status["status"] = {"phase": "Running", "podIP": "10.1.0.0", "conditions": [{"type": "Ready"}]}
            version = fake.put(PODS, status)
            pods = source.reflectors["Pod"].store
            await eventually(lambda: pods.resource_version == str(version), STEP, "the pod event")
            assert source.publish() is None
            assert source.control.version == "1" and events.empty()


async def test_serve_kubernetes_takes_the_mesh_from_the_cluster(tmp_path: Path) -> None:
    async with FakeKubeApi() as fake:
        shop(fake, 3)
        token = new_token()
        append_token(tmp_path / "management-tokens", token, Grant.parse("spiffe://mesh.local/ns/ops/sa/me"))
        (tmp_path / "operator.token").write_text(token)
        proc = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "controlplane",
                "serve",
                "--kubernetes",
                "--kubeconfig",
                str(fake.kubeconfig()),
            ),
            *("--state-dir", str(tmp_path), "--management-tokens", str(tmp_path / "management-tokens")),
            *("--xds-address", "127.0.0.1:0", "--xds-tls-address", "off"),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            line = ""
            async with asyncio.timeout(20):
                while "serving the management API on" not in line:
                    line = (await proc.stdout.readline()).decode()
                    assert line, (await proc.stderr.read()).decode() if proc.stderr else "exited"
            address = line.rsplit(" ", 1)[1].strip()

            async def served() -> str:
                meshctl = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "controlplane.meshctl", "--server", address),
                    *("--token-file", str(tmp_path / "operator.token"), "get"),
                    cwd=REPO,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await meshctl.communicate()
                return out.decode() + err.decode()

            text = await served()
            for _ in range(40):  # the first push follows the first list of every kind
                if "web.shop" in text:
                    break
                text = await served()
            assert "# web.shop vip=10.96.0.10 ports=80 versions=- endpoints=3" in text
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--kubernetes", "--mesh", "m.yaml"],
            "--mesh and --kubernetes are two sources of the mesh: give one",
        ),
        (["--kubeconfig", "k"], "--kubeconfig applies with --kubernetes only"),
        (["--pq", "off"], "--pq applies with --kubernetes only"),
        (["--sidecar-cert-dir", "/x"], "--sidecar-cert-dir applies with --kubernetes only"),
    ],
)
def test_kubernetes_flags_that_do_not_go_together_are_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert controlplane_main(["serve", "--state-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


async def test_serve_kubernetes_with_an_unreadable_kubeconfig_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "controlplane", "serve", "--kubernetes", "--kubeconfig", str(bad)),
        *("--state-dir", str(tmp_path), "--xds-address", "127.0.0.1:0", "--xds-tls-address", "off"),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert f"--kubeconfig {bad}: cannot configure the Kubernetes client" in err.decode()
    assert "Traceback" not in err.decode()


def test_serve_kubernetes_outside_a_cluster_without_a_kubeconfig_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    argv = ["serve", "--kubernetes", "--state-dir", str(tmp_path), "--xds-address", "127.0.0.1:0"]
    assert controlplane_main([*argv, "--xds-tls-address", "off"]) == 1
    err = capsys.readouterr().err
    assert "the in-cluster service account: cannot configure the Kubernetes client" in err
    assert "Traceback" not in err


def accepted(fake: FakeKubeApi, kind: str, name: str) -> dict | None:
    obj = fake.collections[CUSTOM[kind].path].objects[("shop", name)]
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Accepted"), None)


async def test_the_policy_objects_status_says_whether_each_was_accepted_and_why() -> None:
    route_path = CUSTOM["ServiceRoute"].path
    async with FakeKubeApi(served=(SERVICES, SLICES, PODS, NODES, route_path)) as fake:
        shop(fake, 2)
        good = custom(
            "ServiceRoute",
            "shop",
            "web",
            {"service": "web", "versions": [{"name": "v1", "labels": {"app": "web"}}]},
        )
        good["metadata"]["generation"] = 1
        fake.put(route_path, good)
        bad = custom("ServiceRoute", "shop", "orphan", {"service": "gone"})
        fake.put(route_path, bad)
        async with running_source(fake) as (source, _):
            await eventually(
                lambda: accepted(fake, "ServiceRoute", "orphan") is not None, STEP, "the statuses"
            )
            await eventually(lambda: accepted(fake, "ServiceRoute", "web") is not None, STEP, "the statuses")
            first = accepted(fake, "ServiceRoute", "web")
            assert first is not None
            assert (first["status"], first["reason"], first["observedGeneration"]) == ("True", "Accepted", 1)
            orphan = accepted(fake, "ServiceRoute", "orphan")
            assert orphan is not None and (orphan["status"], orphan["reason"]) == ("False", "ServiceNotFound")
            # a new generation that cannot apply: Invalid, with the field path
            broken = custom("ServiceRoute", "shop", "web", {"service": "web", "routes": [{"to": "v9"}]})
            broken["metadata"]["generation"] = 2
            fake.put(route_path, broken)
            await eventually(
                lambda: (accepted(fake, "ServiceRoute", "web") or {}).get("observedGeneration") == 2,
                STEP,
                "gen 2",
            )
            now = accepted(fake, "ServiceRoute", "web")
            assert now is not None and (now["status"], now["reason"]) == ("False", "Invalid")
            assert now["message"] == "spec.routes[0].to: the route has no version 'v9' (versions: none)"
            # our own status writes come back as watch events; once read, nothing is rewritten
            written, version = len(fake.status_patches), fake.version
            assert written == 3  # orphan once, web at generations 1 and 2
            store = source.reflectors["ServiceRoute"].store
            await eventually(lambda: int(store.resource_version) >= version, STEP, "our writes read back")
            await source.write_status()
            assert len(fake.status_patches) == written
