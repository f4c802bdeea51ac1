"""A stand-in for the kubelet: an injected pod template's containers run in a harness pod.

Owns doing, for the meshproxy containers ``meshctl inject`` added, what the kubelet would: the
volumes become directories in the work directory (the downward-API one holds the files its
items name, taken from the pod's annotations; the projected service-account token is a token
the controlplane's CA accepts for the pod's identity: on a cluster it would be the kubelet's
token checked through TokenReview; the ``emptyDir`` is the sidecar group's certificate
directory), each container's arguments have its mount paths replaced by those directories (the
pods share the host's filesystem: no mount namespace per volume), and the containers run in
Kubernetes' order with their ``securityContext`` users: the init containers to completion (as
root, with ``/run`` and ``/tmp`` read-only, as their read-only root filesystem has them), then
a native sidecar (``restartPolicy: Always``) started and its startup probe polled until it
passes, and only then the rest. ``meshproxy`` is this checkout's (``Checkout``).
The application containers are not run: their images are not here; the test starts the
application processes itself once the pod is ready, as the kubelet would start them.

Must not depend on: the injector's internals (it reads the pod template, as the kubelet does).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.demo.layout import write_token
from controlplane.demo.pods import SIDECAR_UID, Pod
from controlplane.demo.pods_mesh import Checkout, Workload, eventually
from controlplane.demo.processes import Children

MESHPROXY = "meshproxy"
# A read-only root filesystem, where it matters to an init container: /run (iptables' lock file,
# which the nf_tables backend does not take) and /tmp, read-only in the container's own mount
# namespace (/tmp bound read-only onto itself, not hidden: the checkout and its .venv may live
# there); then meshproxy with the container's arguments ($@).
READ_ONLY_RUN = (
    "mount -t tmpfs -o ro tmpfs /run && mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && "
    f'exec {sys.executable} -m meshproxy "$@"'
)


@dataclass
class Volumes:
    """Where each volume of the pod is on the host, and what each container mounts where."""

    host: dict[str, Path]  # volume name -> directory

    def rewrite(self, container: dict[str, Any], text: str) -> str:
        for mount in container.get("volumeMounts") or []:
            text = text.replace(mount["mountPath"], str(self.host[mount["name"]]))
        return text


def run_injected(
    pod: Pod,
    template: dict[str, Any],
    work: Path,
    runner: Checkout,
    children: Children,
    tokens: Path,
) -> Workload:
    """Run ``template``'s injected containers in ``pod``; returns once the sidecar is ready."""
    spec = template["spec"]
    notes = template["metadata"]["annotations"]
    sidecar = next(c for c in spec["initContainers"] if c["name"] == "meshproxy")
    args = dict(zip(sidecar["args"][4::2], sidecar["args"][5::2], strict=True))
    identity = args["--identity"]
    group = _group(notes)
    volumes = Volumes({})
    for volume in spec["volumes"]:  # first where each is, then what is in it (paths inside name others)
        name = volume["name"]
        if "emptyDir" in volume:  # the SVIDs: the group's certificate directory, as the mesh names it
            volumes.host[name] = Path(runner.cert_root) / group
        else:
            volumes.host[name] = work / pod.name / name
            volumes.host[name].mkdir(parents=True)
            os.chown(volumes.host[name], SIDECAR_UID, SIDECAR_UID)
    for volume in spec["volumes"]:
        directory = volumes.host[volume["name"]]
        if "downwardAPI" in volume:
            for item in volume["downwardAPI"]["items"]:
                annotation = item["fieldRef"]["fieldPath"].removeprefix("metadata.annotations['")[:-2]
                _owned(directory / item["path"]).write_text(volumes.rewrite(sidecar, notes[annotation]))
        elif "projected" in volume:
            (source,) = volume["projected"]["sources"]
            token = write_token(tokens, identity, directory / source["serviceAccountToken"]["path"])
            os.chown(token, SIDECAR_UID, SIDECAR_UID)
    started = None
    for container in spec["initContainers"]:
        assert container["command"] == [MESHPROXY], container["command"]
        argv = [volumes.rewrite(container, a) for a in container["args"]]
        if container.get("restartPolicy") != "Always":
            assert container["securityContext"]["runAsUser"] == 0
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            done = pod.run("unshare", "--mount", "sh", "-c", READ_ONLY_RUN, "-", *argv, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"init container {container['name']} in {pod.name}: {done.stderr}")
            continue
        assert container["securityContext"]["runAsUser"] == SIDECAR_UID  # Checkout.sidecar's user
        child = children.start(
            f"{group}'s sidecar in pod {pod.name}",
            runner.sidecar(pod, group, argv),
            f"{pod.name}.sidecar.log",
        )
        started = Workload(pod, group, identity, child)
        probe = container["startupProbe"]["httpGet"]
        url = f"http://127.0.0.1:{probe['port']}{probe['path']}"
        eventually(lambda url=url: _probe(pod, url), f"{name}'s startup probe {url}")
    assert started is not None, "no native sidecar among the init containers"
    return started


def _probe(pod: Pod, url: str) -> bool:
    return pod.run("curl", "-sf", "-o", "/dev/null", "--max-time", "2", url, check=False).returncode == 0


def _group(notes: dict[str, str]) -> str:
    return str(json.loads(notes["meshproxy.io/bootstrap"])["node"]["cluster"])


def _owned(path: Path) -> Path:
    path.touch()
    os.chown(path, SIDECAR_UID, SIDECAR_UID)
    return path
