"""The mutating admission webhook's protocol (``admission.k8s.io/v1``), sans I/O.

Owns answering one AdmissionReview: bytes in (the request body the API server POSTs), an
`Answer` out (the HTTP status and the AdmissionReview response). The pod mutation itself is
`controlplane.k8s.inject.inject`, the same function ``meshctl inject`` calls; this module turns
its result into an RFC 6902 JSONPatch of the request's object. The rules, in order:

1. a body that is not an AdmissionReview (not JSON, another apiVersion or kind, no
   ``request.uid``) is answered 400 with the reason: there is no request to answer, and the
   webhook's ``failurePolicy: Ignore`` makes the API server admit the pod unchanged;
2. anything but a ``CREATE`` of a ``Pod`` (UPDATE, DELETE, another kind) is allowed unchanged:
   a pod's containers cannot change after creation, so an UPDATE is never patched;
3. an already-injected, opted-out or uninjectable pod is allowed unchanged; the uninjectable
   one's reasons go back as ``warnings`` (kubectl prints them), never a refusal;
4. otherwise the response carries ``patchType: JSONPatch`` and the patch. A ``dryRun`` request
   gets the same patch (``kubectl apply --dry-run=server`` shows the injected pod): the webhook
   has no side effects (``sideEffects: None``), and a dry run is not counted as an injection.

Every review is allowed: this webhook mutates, it never vetoes. The namespace is the request's
(a pod created from a template has no ``metadata.namespace`` yet).

Must not depend on: asyncio, sockets, TLS, a Kubernetes client.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.k8s.inject import inject
from controlplane.k8s.sidecar import Target

API_VERSION = "admission.k8s.io/v1"


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back: the HTTP status and JSON body, and what happened (for logs, counts)."""

    status: int
    body: dict[str, Any]
    outcome: str  # "injected", "dry-run", "unchanged", "warned", "malformed"
    warnings: tuple[str, ...] = field(default=())

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def review(body: bytes, target: Target) -> Answer:
    """The answer to one AdmissionReview request body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _malformed(f"the body is not JSON: {exc}")
    if (
        not isinstance(doc, dict)
        or doc.get("apiVersion") != API_VERSION
        or doc.get("kind") != "AdmissionReview"
    ):
        return _malformed(f"not an {API_VERSION} AdmissionReview")
    request = doc.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) or not request["uid"]:
        return _malformed("the AdmissionReview has no request.uid")
    uid = request["uid"]
    kind = request.get("kind") or {}
    pod = request.get("object")
    if request.get("operation") != "CREATE" or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return _allowed(uid, "unchanged")
    if not isinstance(pod, dict):
        return _allowed(uid, "warned", ("request.object: not a Pod object; not injected",))
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default")
    metadata = pod.get("metadata") or {}
    name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
    done = inject(pod, namespace, target, f"pod {namespace}/{name}")
    if not done.changed:
        return _allowed(uid, "warned" if done.warnings else "unchanged", done.warnings)
    patch = json_patch(pod, done.pod)
    response = {
        "uid": uid,
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode(),
    }
    outcome = "dry-run" if request.get("dryRun") else "injected"
    return Answer(200, {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}, outcome)


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``before`` into ``after``: objects are compared key by key,
    any other changed value (a list included) is replaced whole."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        ops: list[dict[str, Any]] = []
        for key in before:
            if key not in after:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in after.items():
            where = f"{path}/{_escape(key)}"
            if key not in before:
                ops.append({"op": "add", "path": where, "value": value})
            else:
                ops += json_patch(before[key], value, where)
        return ops
    if before == after and type(before) is type(after):
        return []
    return [{"op": "replace", "path": path, "value": after}]


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901 §3): ``~`` is ``~0``, ``/`` is ``~1``."""
    return str(key).replace("~", "~0").replace("/", "~1")


def _allowed(uid: str, outcome: str, warnings: tuple[str, ...] = ()) -> Answer:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = list(warnings)
    body = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    return Answer(200, body, outcome, warnings)


def _malformed(reason: str) -> Answer:
    return Answer(400, {"error": reason}, "malformed", (reason,))
