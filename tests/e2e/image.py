"""The container image, built, mounted and run by hand inside pods (DESIGN decision 12).

``podman run`` does not work on these machines (crun cannot set rlimits or cgroups), so this
module does what a container runtime does. ``mounted_image`` builds the image with
``deploy/image.sh`` (``make image``'s code path) from the local mmdebstrap base, with the
engine's layer cache, and ``podman image mount``s it. ``Image.argv`` gives each process, inside
its pod's network namespace and a private mount namespace: the image's root bind-mounted
**read-only**, ``/proc``, ``/dev``, a tmpfs on ``/tmp``, each state volume (a tmpfs owned by
1337, as an emptyDir with ``fsGroup`` would be, or a host directory, as a PersistentVolume
is), a configuration directory read-only on ``/etc/meshproxy`` (a ConfigMap), the pod's
``/etc/hosts`` and ``/etc/resolv.conf`` (as the kubelet manages them), then ``chroot`` and the
image's own entrypoint, environment and user (``setpriv`` inside the chroot, as the image's
``USER``; root for the init container's ``meshproxy iptables``, as Kubernetes runs it with
NET_ADMIN).

``ImageRunner`` is ``controlplane.demo.pods_mesh``'s ``Runner`` for the image: the transparent
mesh's controlplane, sidecars, capture and readiness probe from the image, the harness's work
directory as their ``/etc/meshproxy``, each sidecar's certificates in its own tmpfs
``/var/run/meshproxy``, the controlplane's CA on a host directory at ``/var/lib/meshproxy``
(the harness reads the trust bundle from it, as a PersistentVolume outlives its pod).

Used by tests/e2e/test_image.py only; depends on podman, mmdebstrap, unshare and chroot, and
on the pods of ``controlplane.demo.pods``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, SIDECAR_UID, Pod
from controlplane.demo.pods_mesh import CONTROLPLANE_STATE

# One tag per checkout: sessions in other checkouts build theirs beside it on the same engine.
IMAGE = f"localhost/meshproxy:e2e-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
BASE = "localhost/meshproxy-base"
SCRIPT = REPO / "deploy" / "image.sh"
BUILD_TIMEOUT = 1500.0  # a cold base and image build on a loaded 2-core machine
RUN_STATE, LIB_STATE = "run/meshproxy", "var/lib/meshproxy"  # /var/run is a symlink to /run in Debian
CONFIG = "/etc/meshproxy"

# The runtime, as a shell script run as root in the pod: $1 the image root, $2 an empty
# directory to mount it on (the mounts are private to this process), $3 the configuration
# directory, $4 the volumes ("path=tmpfs" or "path=/host/directory", space-separated); the rest
# is the command to run inside.
RUNTIME = f"""
set -e
image=$1 root=$2 config=$3 volumes=$4; shift 4
mount --bind -o ro "$image" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
for volume in $volumes; do
  path=${{volume%%=*}} source=${{volume#*=}}
  if [ "$source" = tmpfs ]; then
    mount -t tmpfs -o uid={SIDECAR_UID},gid={SIDECAR_UID},mode=0750 tmpfs "$root/$path"
  else
    mount --bind "$source" "$root/$path"
  fi
done
mount --bind -o ro "$config" "$root{CONFIG}"
for file in hosts resolv.conf; do mount --bind -o ro "/etc/$file" "$root/etc/$file"; done
exec chroot "$root" "$@"
"""


@dataclass(frozen=True)
class Image:
    """The mounted image and the runtime settings its configuration declares."""

    root: Path
    mountpoint: Path
    config: Path  # the default configuration directory
    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    user: str

    def argv(
        self,
        pod: Pod,
        args: list[str],
        entrypoint: list[str] | None = None,
        root: bool = False,
        config: Path | None = None,
        volumes: Mapping[str, Path] | None = None,
    ) -> list[str]:
        """``ENTRYPOINT ARGS`` (or ``entrypoint ARGS``) in the image, in ``pod``, as its user
        (or ``root``); ``config`` on /etc/meshproxy; ``volumes`` maps a state volume to the host
        directory behind it (the others are fresh tmpfs)."""
        ids = self.user.split(":")
        as_user = [] if root else ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[-1]}", "--clear-groups"]
        inside = ["env", "-i", *self.env, *as_user, *(self.entrypoint if entrypoint is None else entrypoint)]
        sources = {RUN_STATE: "tmpfs", LIB_STATE: "tmpfs", **{k: str(v) for k, v in (volumes or {}).items()}}
        mounts = " ".join(f"{path}={source}" for path, source in sources.items())
        runtime = ["unshare", "--mount", "--propagation", "private", "sh", "-c", RUNTIME, "runtime"]
        where = [str(self.root), str(self.mountpoint), str(config or self.config), mounts]
        return pod.argv([*runtime, *where, *inside, *args])

    def run(
        self,
        pod: Pod,
        *args: str,
        entrypoint: list[str] | None = None,
        root: bool = False,
        config: Path | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``Image.argv``'s command, to completion."""
        return subprocess.run(
            self.argv(pod, list(args), entrypoint, root, config),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _step(*args: str) -> None:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.fail(f"deploy/image.sh {' '.join(args)} failed ({done.returncode}):\n{output}", pytrace=False)


@contextlib.contextmanager
def mounted_image(work: Path) -> Iterator[Image]:
    """The image built from this checkout and mounted, unmounted when the block ends; ``work``
    (an empty directory) holds the mount point and the default configuration directory."""
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


class ImageRunner:
    """``pods_mesh.Runner`` for the image; ``functools.partial(ImageRunner, image)`` is what
    ``pod_mesh(runner=...)`` takes."""

    def __init__(self, image: Image, work: Path) -> None:
        self.image = image
        self.work = work
        self.cert_root = "/var/run/meshproxy/certs"  # in each sidecar's own tmpfs volume

    def path(self, host: Path) -> str:
        inside = host.relative_to(self.work)
        if inside.parts[:1] == (CONTROLPLANE_STATE,):
            return str(Path("/", LIB_STATE, *inside.parts[1:]))
        return str(Path(CONFIG, inside))

    def controlplane(self, pod: Pod, args: list[str]) -> list[str]:
        volumes = {LIB_STATE: self.work / CONTROLPLANE_STATE}
        return self.image.argv(pod, args, ["controlplane"], config=self.work, volumes=volumes)

    def sidecar(self, pod: Pod, group: str, args: list[str]) -> list[str]:
        del group  # the sidecar makes its directory in its tmpfs volume, which is its own
        return self.image.argv(pod, args, config=self.work)

    def meshproxy(self, pod: Pod, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return self.image.run(pod, *args, root=True, config=self.work, timeout=timeout)
