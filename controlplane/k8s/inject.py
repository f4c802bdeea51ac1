"""Injection: the one function that turns a pod (or a pod template) into its meshed form.

Owns the decision and the assembly, for ``meshctl inject`` and the admission webhook alike (the
webhook turns the difference into a JSONPatch, so both produce the same pod):

1. a pod carrying ``meshproxy.io/status`` is already injected: it is returned unchanged
   (injecting twice is injecting once);
2. a pod that says ``meshproxy.io/inject: "false"`` is returned unchanged;
3. a pod that cannot be injected is returned unchanged **with a warning** saying why: no
   ``spec.containers``, ``hostNetwork`` (its traffic is the node's: capturing it would capture the
   node), a container or volume already using one of the injected names, a bad
   ``meshproxy.io/`` annotation (each named). The webhook admits such a pod as it is
   (``AdmissionResponse.warnings``): a mesh problem never blocks a workload;
4. otherwise the init container (none under ``meshproxy.io/cni``), the sidecar (first among the
   init containers as a native sidecar, else first among the containers), its volumes and the
   injector's annotations are added, and nothing else changes. The input is never modified.

Must not depend on: a Kubernetes client, grpc, asyncio, the admission protocol, YAML.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.k8s import annotations as names
from controlplane.k8s.errors import AnnotationError
from controlplane.k8s.sidecar import (
    INIT_NAME,
    SIDECAR_NAME,
    Target,
    Workload,
    init_container,
    injected_annotations,
    sidecar_container,
    volumes,
)

STATUS_VERSION = 1


@dataclass(frozen=True, slots=True)
class Injection:
    """The pod after injection (``pod`` is the input itself when ``changed`` is false)."""

    pod: Mapping[str, Any]
    changed: bool
    warnings: tuple[str, ...] = ()


def inject(pod: Mapping[str, Any], namespace: str, target: Target, where: str = "pod") -> Injection:
    """Inject ``pod`` (``{metadata, spec}`` of a Pod or a template) running in ``namespace``;
    ``where`` names it in warnings (``Deployment shop/web: spec.template``)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = _strings(metadata.get("labels"))
    notes = _strings(metadata.get("annotations"))
    if names.STATUS in notes or names.opted_out(labels, notes):
        return Injection(pod, False)
    problems = _uninjectable(spec)
    settings = None
    try:
        settings = names.read_settings(notes)
    except AnnotationError as exc:
        problems += exc.problems
    if problems or settings is None:
        return Injection(pod, False, tuple(f"{where}: not injected: {p}" for p in problems))
    account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    group = names.sidecar_group(namespace, labels, notes, account)
    workload = Workload(namespace, account, group, settings)
    sidecar = sidecar_container(workload, target)
    init = [] if settings.cni else [init_container(workload, target)]
    native = [sidecar] if target.native else []
    regular = [] if target.native else [sidecar]
    added_volumes = volumes()
    status = {
        "version": STATUS_VERSION,
        "initContainers": [c["name"] for c in (*init, *native)],
        "containers": [c["name"] for c in regular],
        "volumes": [v["name"] for v in added_volumes],
    }
    out = copy.deepcopy(dict(pod))
    out_meta = out.setdefault("metadata", {})
    out_meta["annotations"] = {
        **(out_meta.get("annotations") or {}),
        **injected_annotations(workload, target),
        names.STATUS: json.dumps(status, sort_keys=True),
    }
    out_spec = out["spec"]
    out_spec["initContainers"] = [*init, *native, *(out_spec.get("initContainers") or [])]
    out_spec["containers"] = [*regular, *out_spec["containers"]]
    out_spec["volumes"] = [*(out_spec.get("volumes") or []), *added_volumes]
    return Injection(out, True)


def _uninjectable(spec: Mapping[str, Any]) -> list[str]:
    if not isinstance(spec.get("containers"), list) or not spec["containers"]:
        return ["spec.containers: the pod has no containers"]
    if spec.get("hostNetwork"):
        return ["spec.hostNetwork: the pod uses the node's network; capturing it would capture the node's"]
    problems = []
    for field, taken in (
        ("initContainers", (INIT_NAME, SIDECAR_NAME)),
        ("containers", (INIT_NAME, SIDECAR_NAME)),
        ("volumes", tuple(v["name"] for v in volumes())),
    ):
        for i, item in enumerate(spec.get(field) or []):
            if isinstance(item, Mapping) and item.get("name") in taken:
                problems.append(f"spec.{field}[{i}].name: {item['name']!r} is the name of an injected one")
    return problems


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}
