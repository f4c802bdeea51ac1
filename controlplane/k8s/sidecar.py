"""What injection adds to a pod: the sidecar, its init container, volumes and annotations.

Owns the injected objects' exact shape, as Kubernetes API data (JSON-ready dicts):

- ``meshproxy-init`` (unless ``meshproxy.io/cni``): ``meshproxy iptables`` as root with
  NET_ADMIN and NET_RAW only (every other capability dropped), with the workload's exclusions;
- ``meshproxy``: ``meshproxy run --sidecar`` as uid/gid 1337, non-root, read-only root
  filesystem, no privilege escalation, every capability dropped; its SVID from the controlplane's
  CA (``--ca-address`` over TLS verified with the trust bundle, authenticated by the projected
  service-account token), kept in an in-memory ``emptyDir``. As a **native sidecar** (Kubernetes
  >= 1.29: an init container with ``restartPolicy: Always`` and a startup probe on 15021
  ``/healthz/ready``, so the application starts once the proxy is ready and a Job's pod completes
  when its application does), else a regular first container whose ``postStart`` hook is
  ``meshproxy wait-ready`` (the kubelet starts the next container once it returns);
- volumes: ``meshproxy-config`` (downward API: the bootstrap and the trust bundle, from the pod's
  own annotations, so nothing outside the pod must exist in its namespace), ``meshproxy-token``
  (a projected service-account token, audience `TOKEN_AUDIENCE`, one hour, rotated by the
  kubelet; the identity agent reads it at every CSR) and ``meshproxy-certs``.

Must not depend on: a Kubernetes client, grpc, asyncio, the admission protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controlplane.k8s import annotations as names
from controlplane.k8s.annotations import Settings
from controlplane.mesh.bootstrap import sidecar_bootstrap
from controlplane.mesh.model import Sidecars

INIT_NAME = "meshproxy-init"
SIDECAR_NAME = "meshproxy"
CONFIG_VOLUME, TOKEN_VOLUME, CERTS_VOLUME = "meshproxy-config", "meshproxy-token", "meshproxy-certs"
CONFIG_DIR = "/etc/meshproxy"
TOKEN_DIR = "/var/run/secrets/meshproxy"
CERT_DIR = Sidecars().cert_dir  # the mesh's default sidecars.cert_dir: the controlplane names these files
BOOTSTRAP_FILE, TRUST_FILE, TOKEN_FILE = "bootstrap.json", "ca.pem", "token"
READY_PORT, PROMETHEUS_PORT = 15021, 15090
STATUS_PORTS = (READY_PORT, PROMETHEUS_PORT)  # never captured
TOKEN_SECONDS = 3600
DEFAULT_REQUESTS = (("cpu", "100m"), ("memory", "128Mi"))  # Istio's sidecar defaults
INIT_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
NATIVE_SIDECARS = (1, 29)  # the SidecarContainers feature is on by default from 1.29


@dataclass(frozen=True, slots=True)
class Target:
    """Where the injected sidecars go: the image, the mesh, the controlplane, the cluster."""

    trust_bundle: str  # the CA's PEM bundle the sidecars verify the controlplane with
    image: str = "localhost/meshproxy:latest"
    trust_domain: str = "mesh.local"
    controlplane: str = names.controlplane_host()  # its name (the SNI and SAN) and DNS name
    kube_version: tuple[int, int] = NATIVE_SIDECARS

    @property
    def native(self) -> bool:
        return self.kube_version >= NATIVE_SIDECARS


@dataclass(frozen=True, slots=True)
class Workload:
    """The pod being injected, as far as the injected objects depend on it."""

    namespace: str
    service_account: str
    group: str
    settings: Settings


def injected_annotations(workload: Workload, target: Target) -> dict[str, str]:
    """The bootstrap and the trust bundle (read by the downward-API volume)."""
    metadata = {names.PQ: workload.settings.pq} if workload.settings.pq else None
    bootstrap = sidecar_bootstrap(
        workload.group,
        workload.group,
        (target.controlplane, names.XDS_TLS_PORT),
        f"{CONFIG_DIR}/{TRUST_FILE}",
        target.controlplane,
        metadata,
    )
    return {names.BOOTSTRAP: json.dumps(bootstrap, sort_keys=True), names.TRUST_BUNDLE: target.trust_bundle}


def init_container(workload: Workload, target: Target) -> dict[str, Any]:
    """``meshproxy iptables`` with the workload's exclusions."""
    s = workload.settings
    args = ["iptables", "--exclude-inbound-ports", _join((*STATUS_PORTS, *s.exclude_inbound_ports))]
    for flag, values in (
        ("--exclude-outbound-ports", s.exclude_outbound_ports),
        ("--exclude-inbound-cidrs", s.exclude_inbound_cidrs),
        ("--exclude-outbound-cidrs", s.exclude_outbound_cidrs),
    ):
        if values:
            args += [flag, _join(values)]
    return {
        "name": INIT_NAME,
        "image": target.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["meshproxy"],
        "args": args,
        "resources": INIT_RESOURCES,
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def sidecar_container(workload: Workload, target: Target) -> dict[str, Any]:
    """The proxy: a native sidecar (an init container) or a regular first container."""
    address = f"{target.controlplane}:{names.XDS_TLS_PORT}"
    args = ["run", "-c", f"{CONFIG_DIR}/{BOOTSTRAP_FILE}", "--sidecar"]
    args += ["--ca-address", address, "--ca-trust", f"{CONFIG_DIR}/{TRUST_FILE}"]
    identity = names.spiffe_id(target.trust_domain, workload.namespace, workload.service_account)
    args += ["--identity", identity, "--token-file", f"{TOKEN_DIR}/{TOKEN_FILE}"]
    args += ["--cert-dir", CERT_DIR]
    if workload.settings.concurrency != 1:
        args += ["--concurrency", str(workload.settings.concurrency)]
    ready = {"httpGet": {"path": "/healthz/ready", "port": READY_PORT}}
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": target.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["meshproxy"],
        "args": args,
        "ports": [{"name": "mesh-metrics", "containerPort": PROMETHEUS_PORT, "protocol": "TCP"}],
        "readinessProbe": ready | {"periodSeconds": 15, "failureThreshold": 4},
        "resources": _resources(workload.settings),
        "securityContext": {
            "runAsUser": names.SIDECAR_UID,
            "runAsGroup": names.SIDECAR_UID,
            "runAsNonRoot": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": CERTS_VOLUME, "mountPath": CERT_DIR},
        ],
    }
    if target.native:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = ready | {"periodSeconds": 1, "failureThreshold": 600}
    else:
        wait = ["meshproxy", "wait-ready", "--timeout", "600"]
        container["lifecycle"] = {"postStart": {"exec": {"command": wait}}}
    return container


def volumes() -> list[dict[str, Any]]:
    """The sidecar's three volumes."""
    from_annotation = [
        {"path": path, "fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}}
        for path, annotation in ((BOOTSTRAP_FILE, names.BOOTSTRAP), (TRUST_FILE, names.TRUST_BUNDLE))
    ]
    token = {"audience": names.TOKEN_AUDIENCE, "expirationSeconds": TOKEN_SECONDS, "path": TOKEN_FILE}
    return [
        {"name": CONFIG_VOLUME, "downwardAPI": {"items": from_annotation}},
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": CERTS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def _resources(settings: Settings) -> dict[str, dict[str, str]]:
    """The defaults for what has no limit (Kubernetes makes a lone limit the request too)."""
    limited = {resource for resource, _ in settings.limits}
    defaults = {r: q for r, q in DEFAULT_REQUESTS if r not in limited}
    resources = {"requests": defaults | dict(settings.requests)}
    if settings.limits:
        resources["limits"] = dict(settings.limits)
    return resources


def _join(values: tuple[int | str, ...]) -> str:
    return ",".join(str(v) for v in values)
