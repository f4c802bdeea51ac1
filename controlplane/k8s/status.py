"""The mesh-policy objects' ``Accepted`` condition: what the source made of each, written back.

Owns the verdict on every ``ServiceRoute``, ``ServicePolicy``, ``ServiceAuthorization`` and
``PostQuantumPolicy`` after a translation (`verdicts`, pure), and writing it to the object's
``status`` subresource (`StatusWriter`, a JSON merge patch of ``status.observedGeneration`` and
``status.conditions``, the metav1.Condition list the CRDs declare). The verdicts:

- ``Accepted=True``, reason ``Accepted``: the object applies to its Service as written;
- ``Accepted=False``, reason ``Invalid``: the translation reported problems with it (the message
  lists them, each with its field path); the Service keeps its defaults for what it says;
- ``Accepted=False``, reason ``ServiceNotFound``: no Service of that name in its namespace (it
  applies once one appears);
- ``Accepted=False``, reason ``Conflicted``: another object of the same kind, first by name,
  already applies to that Service (`translate.by_service`'s rule).

A condition is written only when it differs from what this process last wrote for that
object's generation, so watching our own status updates converges; ``lastTransitionTime``
moves only when ``status`` changes. A failed write is logged and tried again at the next
publish: status is a report, and the mesh does not wait for it.

Must not depend on: the mesh model's Envoy translation, grpc.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import aiohttp

from controlplane.k8s.api import Api
from controlplane.k8s.crds import API_VERSION, KINDS
from controlplane.k8s.errors import ApiError
from controlplane.k8s.objects import JsonObject, Key
from controlplane.k8s.translate import by_service

log = logging.getLogger(__name__)

PLURALS = {kind.kind: kind.plural for kind in KINDS}
MAX_MESSAGE = 32768  # metav1.Condition's message limit


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    message: str


def verdicts(
    objects: Mapping[str, Mapping[Key, JsonObject]], meshed: Collection[Key], problems: Iterable[str]
) -> dict[tuple[str, str, str], Verdict]:
    """(kind, namespace, name) -> its verdict, for every object of ``objects`` (kind -> objects);
    ``meshed`` are the (namespace, name) of the Services the mesh serves."""
    found = list(problems)
    out = {}
    for kind, by_key in objects.items():
        applied = by_service(by_key)
        for (namespace, name), obj in by_key.items():
            service = str((obj.get("spec") or {}).get("service", ""))
            prefix = f"{kind} {namespace}/{name}: "
            own = [p.removeprefix(prefix) for p in found if p.startswith(prefix)]
            winner = applied.get((namespace, service))
            if (namespace, service) not in meshed:
                verdict = Verdict(
                    False,
                    "ServiceNotFound",
                    f"no Service {service!r} in namespace {namespace} that the mesh serves "
                    "(a ClusterIP Service)",
                )
            elif winner is not obj:
                other = str((winner or {}).get("metadata", {}).get("name", ""))
                verdict = Verdict(False, "Conflicted", f"{kind} {other} already applies to Service {service}")
            elif own:
                verdict = Verdict(False, "Invalid", "; ".join(own)[:MAX_MESSAGE])
            else:
                verdict = Verdict(True, "Accepted", f"applies to Service {service}")
            out[(kind, namespace, name)] = verdict
    return out


class StatusWriter:
    """Writes verdicts that changed, remembering what it wrote (and when each status turned)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._written: dict[tuple[str, str, str], tuple[int, Verdict, str]] = {}

    async def write(
        self,
        objects: Mapping[str, Mapping[Key, JsonObject]],
        judged: Mapping[tuple[str, str, str], Verdict],
        now: datetime,
    ) -> None:
        for key, verdict in judged.items():
            kind, namespace, name = key
            obj = objects[kind][(namespace, name)]
            generation = int((obj.get("metadata") or {}).get("generation") or 0)
            last = self._written.get(key)
            if last is not None and last[:2] == (generation, verdict):
                continue
            turned = last[2] if last is not None and last[1].accepted == verdict.accepted else _rfc3339(now)
            condition = {
                "type": "Accepted",
                "status": "True" if verdict.accepted else "False",
                "reason": verdict.reason,
                "message": verdict.message,
                "observedGeneration": generation,
                "lastTransitionTime": turned,
            }
            path = f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURALS[kind]}/{name}/status"
            patch = {"status": {"observedGeneration": generation, "conditions": [condition]}}
            try:
                await self.api.merge_patch(path, patch)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning(
                    "%s %s/%s: cannot write its status (%s); trying at the next change",
                    kind,
                    namespace,
                    name,
                    exc,
                )
                continue
            self._written[key] = (generation, verdict, turned)
        for key in set(self._written) - set(judged):  # deleted objects
            del self._written[key]


def _rfc3339(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
