"""``meshctl inject``'s input and output: Kubernetes manifests, injected offline.

Owns finding the pods in manifests: a Pod itself, the pod template of a Deployment,
StatefulSet, DaemonSet, ReplicaSet or Job (``spec.template``), of a CronJob
(``spec.jobTemplate.spec.template``), and the items of a ``List``; every other object passes
through unchanged. Documents are YAML (several, ``---``-separated) and keep their order.

A workload injected without ``metadata.namespace`` is injected for the namespace given (the
``--namespace`` flag, ``default`` unless given), which is then written into it: its identity and
sidecar group depend on the namespace, so ``kubectl apply -n other`` refuses it instead of
running sidecars with another namespace's identity.

Must not depend on: a Kubernetes client, grpc, asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from controlplane.k8s.errors import InjectionError
from controlplane.k8s.inject import inject
from controlplane.k8s.sidecar import Target

# kind -> path of its pod template (empty: the object is the pod)
TEMPLATES: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass
class Injected:
    """The documents after injection, and what was (not) injected, object by object."""

    documents: list[Any]
    injected: list[str] = field(default_factory=list)  # "Deployment shop/web"
    warnings: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.documents, sort_keys=False, default_flow_style=False)


def inject_yaml(text: str, target: Target, namespace: str = "default", source: str = "-") -> Injected:
    """Every document of ``text`` injected; `InjectionError` names ``source`` and the document."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InjectionError(f"{source}: not valid YAML: {exc}") from None
    result = Injected([])
    for i, doc in enumerate(documents):
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
            raise InjectionError(f"{source}: document {i + 1} is not a Kubernetes object (no 'kind')")
        result.documents.append(_object(doc, target, namespace, result))
    return result


def _object(obj: dict[str, Any], target: Target, namespace: str, result: Injected) -> dict[str, Any]:
    kind = obj["kind"]
    if kind == "List" and isinstance(obj.get("items"), list):
        items = [_object(i, target, namespace, result) if isinstance(i, dict) else i for i in obj["items"]]
        return {**obj, "items": items}
    if kind not in TEMPLATES:
        return obj
    metadata = obj.get("metadata") or {}
    ns = str(metadata.get("namespace") or namespace)
    name = f"{kind} {ns}/{metadata.get('name', '?')}"
    path = TEMPLATES[kind]
    template = _at(obj, path)
    if template is None:
        result.warnings.append(f"{name}: not injected: {'.'.join(path)} is missing")
        return obj
    where = f"{name}: {'.'.join(path)}" if path else name
    done = inject(template, ns, target, where)
    result.warnings += done.warnings
    if not done.changed:
        return obj
    result.injected.append(name)
    out = _replaced(obj, path, dict(done.pod))
    out["metadata"] = {**(out.get("metadata") or {}), "namespace": ns}  # a Pod's: the injected one
    return out


def _at(obj: Any, path: tuple[str, ...]) -> dict[str, Any] | None:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else None


def _replaced(obj: dict[str, Any], path: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with ``value`` at ``path`` (copies along the path; the rest is shared)."""
    if not path:
        return value
    return {**obj, path[0]: _replaced(obj[path[0]], path[1:], value)}
