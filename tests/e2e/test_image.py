"""The container image, run from its own root filesystem inside pods (DESIGN decision 12).

``podman run`` does not work on these machines (crun cannot set rlimits or cgroups), so these
tests do by hand what a container runtime does. The module builds the image once with
``deploy/image.sh`` (``make image``'s code path) from the local mmdebstrap base, with the
engine's layer cache, and ``podman image mount``s it. Each process then gets, inside its pod's
network namespace and a private mount namespace: the image's root bind-mounted **read-only**,
``/proc``, ``/dev``, a tmpfs on ``/tmp`` and on each state volume (owned by 1337, as an emptyDir
with ``fsGroup`` would be), the test's configuration directory read-only on ``/etc/meshproxy``
(a ConfigMap), then ``chroot`` and the image's own entrypoint, environment and user (``setpriv``
inside the chroot, as the image's ``USER``). The init container's ``meshproxy iptables`` runs as
root, as Kubernetes runs it with NET_ADMIN.

What is proved from the image: no compiler, iptables present, every module precompiled, the
extensions loaded, the root read-only with writable volumes, ``validate``, a static sidecar
proxying HTTP between pods, the controlplane serving xDS to a sidecar from the image, and the
capture rules installed, printed and removed by the image's ``meshproxy iptables``.
Needs root (the directory's conftest skips otherwise), podman and mmdebstrap
(``make image-debs``); as root without them the tests fail and say what to install.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, SIDECAR_UID, Pod, Pods

IMAGE = "localhost/meshproxy:e2e"
BASE = "localhost/meshproxy-base"
SCRIPT = REPO / "deploy" / "image.sh"
BUILD_TIMEOUT = 1500.0  # a cold base and image build on a loaded 2-core machine
START_TIMEOUT = 60.0  # imports and the CA's first key, from a cold page cache
VOLUMES = ("run/meshproxy", "var/lib/meshproxy")  # /var/run is a symlink to /run in Debian
PROXY_PORT, APP_PORT, XDS_PORT = 10000, 8080, 15010
COUNTERS = r"\[\d+:\d+\]"
SITE = "opt/meshproxy/lib/python3.11/site-packages"

# The runtime, as a shell script run as root in the pod: $1 the image root, $2 an empty
# directory to mount it on (the mounts are private to this process), $3 the configuration
# directory; the rest is the command to run inside.
RUNTIME = f"""
set -e
image=$1 root=$2 config=$3; shift 3
mount --bind -o ro "$image" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
for volume in {" ".join(VOLUMES)}; do
  mount -t tmpfs -o uid={SIDECAR_UID},gid={SIDECAR_UID},mode=0750 tmpfs "$root/$volume"
done
mount --bind -o ro "$config" "$root/etc/meshproxy"
exec chroot "$root" "$@"
"""


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


@dataclass(frozen=True)
class Image:
    """The mounted image and the runtime settings its configuration declares."""

    root: Path
    mountpoint: Path
    config: Path
    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    user: str

    def argv(self, pod: Pod, args: list[str], entrypoint: list[str] | None, root: bool) -> list[str]:
        ids = self.user.split(":")
        as_user = [] if root else ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[-1]}", "--clear-groups"]
        inside = ["env", "-i", *self.env, *as_user, *(self.entrypoint if entrypoint is None else entrypoint)]
        runtime = ["unshare", "--mount", "--propagation", "private", "sh", "-c", RUNTIME, "runtime"]
        return pod.argv([*runtime, str(self.root), str(self.mountpoint), str(self.config), *inside, *args])

    def run(
        self, pod: Pod, *args: str, entrypoint: list[str] | None = None, root: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``ENTRYPOINT ARGS`` (or ``entrypoint ARGS``) in the image, in ``pod``, to completion."""
        return subprocess.run(
            self.argv(pod, list(args), entrypoint, root),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def start(self, pod: Pod, *args: str, entrypoint: list[str] | None = None) -> Process:
        popen = subprocess.Popen(
            self.argv(pod, list(args), entrypoint, root=False),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Process(popen)


def _step(*args: str) -> None:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.fail(f"deploy/image.sh {' '.join(args)} failed ({done.returncode}):\n{output}", pytrace=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    missing = [tool for tool in ("podman", "mmdebstrap", "unshare", "chroot") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: install podman and mmdebstrap (make image-debs)", pytrace=False
        )
    _step("base", BASE)
    _step("build", IMAGE, BASE)
    inspect = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Config}}", IMAGE],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    config = json.loads(inspect.stdout)
    mounted = subprocess.run(
        ["podman", "image", "mount", IMAGE],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=True,
    )
    work = tmp_path_factory.mktemp("image")
    (work / "root").mkdir()
    (work / "etc").mkdir()
    try:
        yield Image(
            root=Path(mounted.stdout.strip()),
            mountpoint=work / "root",
            config=work / "etc",
            env=tuple(config["Env"]),
            entrypoint=tuple(config["Entrypoint"]),
            user=config["User"],
        )
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True, timeout=COMMAND_TIMEOUT)


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
class Mesh:
    """Five pods: a client, an application, a static sidecar, a controlplane and an xDS sidecar."""

    client: Pod
    app: Pod
    static: Pod
    controlplane: Pod
    xds: Pod
    body: str  # what the application serves at /hello.txt
    processes: list[Process]


@pytest.fixture(scope="module")
def mesh(image: Image, module_pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
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

        sidecar = image.start(static, "run", "-c", "/etc/meshproxy/static.json", "--log-level", "info")
        processes.append(sidecar)
        sidecar.wait_for(f"listener ingress ready on 0.0.0.0:{PROXY_PORT}")

        server = image.start(
            controlplane,
            *("serve", "--ca-dir", "/var/lib/meshproxy/ca", "--tokens", "/etc/meshproxy/tokens"),
            *("--mesh", "/etc/meshproxy/mesh.yaml"),
            *("--xds-address", f"0.0.0.0:{XDS_PORT}", "--xds-resources", "/etc/meshproxy/resources.json"),
            *("--allow-plaintext-remote", "--xds-tls-address", "off"),  # plaintext across pods
            entrypoint=["controlplane"],
        )
        processes.append(server)
        server.wait_for(f"serving xDS \\(ADS\\) on .*:{XDS_PORT}")
        consumer = image.start(xds, "run", "-c", "/etc/meshproxy/xds.json", "--log-level", "info")
        processes.append(consumer)
        consumer.wait_for("first complete configuration applied")
        yield Mesh(client, app, static, controlplane, xds, body, processes)
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


def test_the_image_runs_its_entrypoint_as_1337(image: Image, mesh: Mesh) -> None:
    assert image.user == "1337:1337"
    assert image.entrypoint == ("meshproxy",)
    ids = image.run(mesh.client, "-c", "id -u; id -g; id -G", entrypoint=["sh"])
    assert ids.stdout.split() == ["1337", "1337", "1337"], ids.stderr
    helped = image.run(mesh.client, "--help")
    assert helped.returncode == 0, helped.stderr
    commands = set(helped.stdout.split("{", 1)[1].split("}", 1)[0].split(","))
    assert {"run", "validate", "tls-probe", "iptables", "wait-ready"} <= commands, helped.stdout
    served = image.run(mesh.client, "serve", "--help", entrypoint=["controlplane"])
    assert served.returncode == 0 and "--ca-dir" in served.stdout, served.stderr


def test_the_installed_version_and_extensions_are_the_checkout_s(image: Image, mesh: Mesh) -> None:
    probe = (
        "import json, importlib.metadata as m, meshproxy._ext as e;"
        "print(json.dumps([m.version('meshproxy'), e.extensions_status(), e.__file__]))"
    )
    done = image.run(mesh.client, "-c", probe, entrypoint=["python3"])
    assert done.returncode == 0, done.stderr
    version, status, where = json.loads(done.stdout)
    assert version == re.search(r'(?m)^version = "(.+)"', (REPO / "pyproject.toml").read_text())[1]
    assert status and all(status.values()), status
    assert where.startswith("/opt/meshproxy/")


def test_the_root_filesystem_is_read_only_and_only_the_volumes_are_writable(image: Image, mesh: Mesh) -> None:
    script = "touch /opt/meshproxy/x /etc/x /x 2>&1; touch /var/run/meshproxy/x /var/lib/meshproxy/x /tmp/x"
    done = image.run(mesh.client, "-c", script, entrypoint=["sh"])
    assert done.stdout.count("Read-only file system") == 3, done.stdout
    assert done.returncode == 0, done.stderr  # the volumes took their files
    as_root = image.run(mesh.client, "-c", "touch /opt/meshproxy/x", entrypoint=["sh"], root=True)
    assert "Read-only file system" in as_root.stderr


def test_validate_from_the_image_accepts_the_bootstrap_and_names_a_bad_field(
    image: Image, mesh: Mesh
) -> None:
    good = image.run(mesh.client, "validate", "-c", "/etc/meshproxy/static.json")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "/etc/meshproxy/static.json: OK (1 listener(s), 1 cluster(s))"
    bad = json.loads((image.config / "static.json").read_text())
    bad["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    (image.config / "bad.json").write_text(json.dumps(bad))
    refused = image.run(mesh.client, "validate", "-c", "/etc/meshproxy/bad.json")
    assert refused.returncode == 1
    assert "static_resources.clusters[0].connect_timeout" in refused.stderr, refused.stderr


def _get(client: Pod, pod: Pod) -> str:
    return client.run("curl", "-sS", "--max-time", "10", f"http://{pod.ipv4}:{PROXY_PORT}/hello.txt").stdout


def _requests(pod: Pod) -> int:
    stats = pod.run("curl", "-sS", "--max-time", "10", "http://127.0.0.1:15000/stats/prometheus").stdout
    found = re.search(r'(?m)^meshproxy_http_downstream_rq_total\{stat_prefix="ingress"\} (\S+)$', stats)
    assert found, stats[-2000:]
    return int(float(found[1]))


def test_a_static_sidecar_from_the_image_proxies_http_between_pods(mesh: Mesh) -> None:
    before = _requests(mesh.static)
    assert _get(mesh.client, mesh.static) == mesh.body
    assert _get(mesh.client, mesh.static) == mesh.body
    assert _requests(mesh.static) == before + 2


def test_the_controlplane_from_the_image_configures_a_sidecar_from_the_image(mesh: Mesh) -> None:
    before = _requests(mesh.xds)
    assert _get(mesh.client, mesh.xds) == mesh.body
    assert _requests(mesh.xds) == before + 1


def _nat(pod: Pod) -> tuple[str, str]:
    """Both families' nat tables, counters zeroed (traffic moves them, rules do not)."""
    v4, v6 = (pod.save(f"{family}-save", "-t", "nat") for family in ("iptables", "ip6tables"))
    return re.sub(COUNTERS, "[0:0]", v4), re.sub(COUNTERS, "[0:0]", v6)


def test_the_images_iptables_installs_prints_and_removes_the_capture(image: Image, mesh: Mesh) -> None:
    pod = mesh.client
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
