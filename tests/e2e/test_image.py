"""The container image, run from its own root filesystem inside pods (DESIGN decision 12).

``podman run`` does not work on these machines, so the image is built once for the module and
run by hand inside pods (tests/e2e/image.py: a read-only root, tmpfs volumes owned by 1337, the
configuration read-only on ``/etc/meshproxy``, the image's entrypoint, environment and user).

What is proved from the image: no compiler, iptables present, every module precompiled, the
extensions loaded, the root read-only with writable volumes, ``validate``, a static sidecar
proxying HTTP between pods, the controlplane serving xDS to a sidecar from the image, and the
capture rules installed, printed and removed by the image's ``meshproxy iptables`` (five pods,
the ``explicit`` fixture). Then issue 13's pod test with everything meshproxy runs taken from
the image: ``controlplane.demo.pods_mesh``'s transparent mesh (the ``mesh`` fixture) built with
``ImageRunner``, so the init containers' ``meshproxy iptables``, the sidecars, their
``wait-ready`` probe and the controlplane are the image's, and tests/e2e/test_mesh_pods.py's
core-path tests (imported below, so they are the same tests, not copies) run on it: curl, a
grpcio client and a raw TCP client in pod ``a`` call ``hello`` by name, over mutual TLS with
X25519MLKEM768 (both sidecars' stats, and the ServerHello on pod a's veth), and hello's
application sees web's SPIFFE ID in XFCC.
Needs root (the directory's conftest skips otherwise), podman and mmdebstrap
(``make image-debs``); as root without them the tests fail and say what to install.
"""

from __future__ import annotations

import functools
import json
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, Pod, Pods
from controlplane.demo.pods_mesh import PodMesh, pod_mesh

from . import test_mesh_pods as core
from .image import BUILD_TIMEOUT, Image, ImageRunner, mounted_image

START_TIMEOUT = 60.0  # imports and the CA's first key, from a cold page cache
PROXY_PORT, APP_PORT, XDS_PORT = 10000, 8080, 15010
COUNTERS = r"\[\d+:\d+\]"
SITE = "opt/meshproxy/lib/python3.11/site-packages"


class Process:
    """A process started from the image; a thread collects its merged output line by line."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str) -> None:
        """Return once an output line matches ``pattern``; fail with the output if none comes."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)}")
            self.lines.append(line)
            if re.search(pattern, line):
                return

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=COMMAND_TIMEOUT)


# The first test builds the image (a cold build takes minutes; image.BUILD_TIMEOUT bounds it).
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 300)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    with mounted_image(tmp_path_factory.mktemp("image")) as mounted:
        yield mounted


def start(image: Image, pod: Pod, *args: str, entrypoint: list[str] | None = None) -> Process:
    """``ENTRYPOINT ARGS`` (or ``entrypoint ARGS``) from the image in ``pod``, in the background."""
    argv = image.argv(pod, list(args), entrypoint)
    return Process(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))


def _http_filter_chain() -> dict[str, object]:
    extensions = "type.googleapis.com/envoy.extensions.filters"
    hcm = f"{extensions}.network.http_connection_manager.v3.HttpConnectionManager"
    route = {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
    return {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": hcm,
                    "stat_prefix": "ingress",
                    "route_config": {
                        "name": "app",
                        "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [route]}],
                    },
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": f"{extensions}.http.router.v3.Router"},
                        }
                    ],
                },
            }
        ]
    }


def _cluster(name: str, address: str, port: int, http2: bool = False) -> dict[str, object]:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}
    cluster: dict[str, object] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }
    if http2:  # gRPC (ADS) needs HTTP/2 to the controlplane
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


LISTENER = {
    "name": "ingress",
    "address": {"socket_address": {"address": "0.0.0.0", "port_value": PROXY_PORT}},
    "filter_chains": [_http_filter_chain()],
}
ADMIN = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}}


@dataclass
class Explicit:
    """Five pods: a client, an application, a static sidecar, a controlplane and an xDS sidecar."""

    client: Pod
    app: Pod
    static: Pod
    controlplane: Pod
    xds: Pod
    body: str  # what the application serves at /hello.txt
    processes: list[Process]


@pytest.fixture(scope="module")
def explicit(image: Image, module_pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explicit]:
    client = module_pods.add("client")
    app = module_pods.add("app")
    static = module_pods.add("static")
    controlplane = module_pods.add("cp")
    xds = module_pods.add("xds")
    processes: list[Process] = []
    try:
        www = tmp_path_factory.mktemp("www")
        body = f"hello from the app {secrets.token_hex(8)}\n"
        (www / "hello.txt").write_text(body)
        served = Process(
            subprocess.Popen(
                app.argv([sys.executable, "-u", "-m", "http.server", str(APP_PORT), "-d", str(www)]),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        processes.append(served)
        served.wait_for("Serving HTTP")

        cluster = _cluster("app", app.ipv4, APP_PORT)
        static_bootstrap = {
            "node": {"id": "static", "cluster": "static"},
            "admin": ADMIN,
            "static_resources": {"listeners": [LISTENER], "clusters": [cluster]},
        }
        (image.config / "static.json").write_text(json.dumps(static_bootstrap))
        xds_bootstrap = {
            "node": {"id": "xds", "cluster": "default"},
            "admin": ADMIN,
            "static_resources": {"clusters": [_cluster("xds", controlplane.ipv4, XDS_PORT, http2=True)]},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
                },
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
            },
        }
        (image.config / "xds.json").write_text(json.dumps(xds_bootstrap))
        v3 = "type.googleapis.com/envoy.config"
        resources = [
            {"@type": f"{v3}.listener.v3.Listener", **LISTENER},
            {"@type": f"{v3}.cluster.v3.Cluster", **cluster},
        ]
        (image.config / "resources.json").write_text(json.dumps({"resources": resources}))
        (image.config / "tokens").write_text("")
        # A mesh with no services: the default group serves the raw resources alone.
        (image.config / "mesh.yaml").write_text("mesh: {trust_domain: mesh.local}\nservices: []\n")

        sidecar = start(image, static, "run", "-c", "/etc/meshproxy/static.json", "--log-level", "info")
        processes.append(sidecar)
        sidecar.wait_for(f"listener ingress ready on 0.0.0.0:{PROXY_PORT}")

        server = start(
            image,
            controlplane,
            *("serve", "--ca-dir", "/var/lib/meshproxy/ca", "--tokens", "/etc/meshproxy/tokens"),
            *("--mesh", "/etc/meshproxy/mesh.yaml"),
            *("--xds-address", f"0.0.0.0:{XDS_PORT}", "--xds-resources", "/etc/meshproxy/resources.json"),
            *("--allow-plaintext-remote", "--xds-tls-address", "off"),  # plaintext across pods
            entrypoint=["controlplane"],
        )
        processes.append(server)
        server.wait_for(f"serving xDS \\(ADS\\) on .*:{XDS_PORT}")
        consumer = start(image, xds, "run", "-c", "/etc/meshproxy/xds.json", "--log-level", "info")
        processes.append(consumer)
        consumer.wait_for("first complete configuration applied")
        yield Explicit(client, app, static, controlplane, xds, body, processes)
    finally:
        for process in processes:
            process.stop()


def _pyc_flags(pyc: Path) -> int:
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def test_the_final_stage_has_no_compiler_and_carries_iptables(image: Image) -> None:
    tools = {p.name for d in ("usr/bin", "usr/local/bin", "bin") for p in (image.root / d).glob("*")}
    assert not {t for t in tools if re.fullmatch(r"(.*-)?(gcc|cc|c\+\+|g\+\+|ld)(-\d+)?", t)}
    assert not list((image.root / SITE).glob("[Cc]ython*")), "Cython belongs in the builder stage"
    assert not list((image.root / SITE).glob("pip*")), "no installer in the runtime environment"
    for tool in ("iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"):
        assert (image.root / "usr/sbin" / tool).exists(), tool


def test_every_module_is_precompiled_so_nothing_is_written_at_run_time(image: Image) -> None:
    sources = [p for pkg in ("meshproxy", "controlplane") for p in (image.root / SITE / pkg).rglob("*.py")]
    assert len(sources) > 100
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        # PEP 552: flags 0b01 is an unchecked hash, valid whatever mtimes the copy left.
        assert _pyc_flags(pyc) == 0b01, pyc
    assert "PYTHONDONTWRITEBYTECODE=1" in image.env


def test_the_image_runs_its_entrypoint_as_1337(image: Image, explicit: Explicit) -> None:
    assert image.user == "1337:1337"
    assert image.entrypoint == ("meshproxy",)
    ids = image.run(explicit.client, "-c", "id -u; id -g; id -G", entrypoint=["sh"])
    assert ids.stdout.split() == ["1337", "1337", "1337"], ids.stderr
    helped = image.run(explicit.client, "--help")
    assert helped.returncode == 0, helped.stderr
    commands = set(helped.stdout.split("{", 1)[1].split("}", 1)[0].split(","))
    assert {"run", "validate", "tls-probe", "iptables", "wait-ready"} <= commands, helped.stdout
    served = image.run(explicit.client, "serve", "--help", entrypoint=["controlplane"])
    assert served.returncode == 0 and "--ca-dir" in served.stdout, served.stderr


def test_the_installed_version_and_extensions_are_the_checkout_s(image: Image, explicit: Explicit) -> None:
    probe = (
        "import json, importlib.metadata as m, meshproxy._ext as e;"
        "print(json.dumps([m.version('meshproxy'), e.extensions_status(), e.__file__]))"
    )
    done = image.run(explicit.client, "-c", probe, entrypoint=["python3"])
    assert done.returncode == 0, done.stderr
    version, status, where = json.loads(done.stdout)
    assert version == re.search(r'(?m)^version = "(.+)"', (REPO / "pyproject.toml").read_text())[1]
    assert status and all(status.values()), status
    assert where.startswith("/opt/meshproxy/")


def test_the_root_filesystem_is_read_only_and_only_the_volumes_are_writable(
    image: Image, explicit: Explicit
) -> None:
    script = "touch /opt/meshproxy/x /etc/x /x 2>&1; touch /var/run/meshproxy/x /var/lib/meshproxy/x /tmp/x"
    done = image.run(explicit.client, "-c", script, entrypoint=["sh"])
    assert done.stdout.count("Read-only file system") == 3, done.stdout
    assert done.returncode == 0, done.stderr  # the volumes took their files
    as_root = image.run(explicit.client, "-c", "touch /opt/meshproxy/x", entrypoint=["sh"], root=True)
    assert "Read-only file system" in as_root.stderr


def test_validate_from_the_image_accepts_the_bootstrap_and_names_a_bad_field(
    image: Image, explicit: Explicit
) -> None:
    good = image.run(explicit.client, "validate", "-c", "/etc/meshproxy/static.json")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "/etc/meshproxy/static.json: OK (1 listener(s), 1 cluster(s))"
    bad = json.loads((image.config / "static.json").read_text())
    bad["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    (image.config / "bad.json").write_text(json.dumps(bad))
    refused = image.run(explicit.client, "validate", "-c", "/etc/meshproxy/bad.json")
    assert refused.returncode == 1
    assert "static_resources.clusters[0].connect_timeout" in refused.stderr, refused.stderr


def _get(client: Pod, pod: Pod) -> str:
    return client.run("curl", "-sS", "--max-time", "10", f"http://{pod.ipv4}:{PROXY_PORT}/hello.txt").stdout


def _requests(pod: Pod) -> int:
    stats = pod.run("curl", "-sS", "--max-time", "10", "http://127.0.0.1:15000/stats/prometheus").stdout
    found = re.search(r'(?m)^meshproxy_http_downstream_rq_total\{stat_prefix="ingress"\} (\S+)$', stats)
    assert found, stats[-2000:]
    return int(float(found[1]))


def test_a_static_sidecar_from_the_image_proxies_http_between_pods(explicit: Explicit) -> None:
    before = _requests(explicit.static)
    assert _get(explicit.client, explicit.static) == explicit.body
    assert _get(explicit.client, explicit.static) == explicit.body
    assert _requests(explicit.static) == before + 2


def test_the_controlplane_from_the_image_configures_a_sidecar_from_the_image(explicit: Explicit) -> None:
    before = _requests(explicit.xds)
    assert _get(explicit.client, explicit.xds) == explicit.body
    assert _requests(explicit.xds) == before + 1


def _nat(pod: Pod) -> tuple[str, str]:
    """Both families' nat tables, counters zeroed (traffic moves them, rules do not)."""
    v4, v6 = (pod.save(f"{family}-save", "-t", "nat") for family in ("iptables", "ip6tables"))
    return re.sub(COUNTERS, "[0:0]", v4), re.sub(COUNTERS, "[0:0]", v6)


def test_the_images_iptables_installs_prints_and_removes_the_capture(
    image: Image, explicit: Explicit
) -> None:
    pod = explicit.client
    # A fresh namespace has no nat table until something uses it; ``-t nat`` lists it either
    # way, so that is the listing compared (as in test_iptables_netns).
    before = _nat(pod)
    printed = image.run(pod, "iptables", "--dry-run", root=True)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == pod.meshproxy("iptables", "--dry-run").stdout  # the checkout's rules
    installed = image.run(pod, "iptables", root=True)
    assert installed.returncode == 0, installed.stderr
    rules = _nat(pod)
    assert "-j REDIRECT --to-ports 15001" in rules[0] and "--uid-owner 1337" in rules[0]
    assert "-j REDIRECT --to-ports 15006" in rules[1]
    removed = image.run(pod, "iptables", "--cleanup", root=True)
    assert removed.returncode == 0, removed.stderr
    assert _nat(pod) == before


@pytest.fixture(scope="module")
def mesh(image: Image, module_pods: Pods) -> Iterator[PodMesh]:
    """test_mesh_pods's transparent mesh, its meshproxy and controlplane run from the image."""
    del module_pods  # the directory's root and tool checks; the mesh makes its own pods
    with pod_mesh(runner=functools.partial(ImageRunner, image)) as built:
        yield built
    assert not built.pods.leftovers()


def _process(pid: int) -> tuple[list[str], str]:
    """A process's command line and real, effective, saved and filesystem uids."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    uids = re.search(r"(?m)^Uid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text())
    assert uids, pid
    return argv, " ".join(uids[1].split())


def test_the_transparent_mesh_s_controlplane_and_sidecars_are_the_image_s_programs(mesh: PodMesh) -> None:
    """What makes the imported tests evidence about the image: the controlplane and every
    sidecar are the image's programs (its virtualenv, which the host does not have), as 1337."""
    assert not Path("/opt/meshproxy").exists()
    (controlplane,) = (c for c in mesh.children.started if c.name == "the controlplane")
    sidecars = [mesh.web.sidecar, *(w.sidecar for w in mesh.hello.values())]
    for child, program in [(controlplane, "controlplane"), *((s, "meshproxy") for s in sidecars)]:
        argv, uids = _process(child.proc.pid)
        assert argv[:2] == ["/opt/meshproxy/bin/python3", f"/opt/meshproxy/bin/{program}"], argv
        assert uids == "1337 1337 1337 1337", (child.name, uids)


# test_mesh_pods's core-path tests, collected here on this module's ``mesh`` (the same tests, not
# copies), in their file's order: the curl test's capture expects web's sidecar's first
# connection to hello v1's HTTP port.
test_curl_by_name_reaches_hello_over_pq_mutual_tls_and_the_app_sees_plaintext_and_the_caller = (
    core.test_curl_by_name_reaches_hello_over_pq_mutual_tls_and_the_app_sees_plaintext_and_the_caller
)
test_a_grpc_client_calls_the_grpc_port_by_name = core.test_a_grpc_client_calls_the_grpc_port_by_name
test_raw_tcp_reaches_the_echo_carried_over_pq_mutual_tls = (
    core.test_raw_tcp_reaches_the_echo_carried_over_pq_mutual_tls
)
