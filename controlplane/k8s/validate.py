"""Manifests checked offline against the real Kubernetes OpenAPI schemas (kubernetes-validate).

Owns which Kubernetes versions a manifest must satisfy (every version kubernetes-validate ships
from `OLDEST` on, 1.29: the first with native sidecars on by default) and the wording of what is
wrong: ``Deployment meshproxy-system/meshproxy-controlplane: Kubernetes 1.29: spec.template...:
reason``. Strict mode: a field the schema does not define is an error, as ``kubectl apply
--validate=strict`` makes it. The schemas are kubernetes-validate's JSON Schema files (generated
from each release's OpenAPI document), read by jsonschema the way its ``validate`` reads them,
with each (version, kind) validator built once: its ``validate`` re-reads the definitions file
(megabytes of JSON) on every call. kubernetes-validate is the optional dependency
``meshproxy[kubernetes]`` (and in the test extra).

Must not depend on: a Kubernetes client, grpc, asyncio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

OLDEST = (1, 29)
_SCHEMAS = resources.files("kubernetes_validate") / "kubernetes-json-schema"
_DIR = re.compile(r"^v(\d+)\.(\d+)\.\d+-local-strict$")


def versions() -> tuple[str, ...]:
    """The ``MAJOR.MINOR`` versions checked: kubernetes-validate's, from `OLDEST` on."""
    found = {(int(m[1]), int(m[2])) for d in _SCHEMAS.iterdir() if (m := _DIR.match(d.name))}
    return tuple(f"{a}.{b}" for a, b in sorted(found) if (a, b) >= OLDEST)


def problems(documents: Iterable[Mapping[str, Any]], checked: Iterable[str] | None = None) -> list[str]:
    """What is wrong with each document, for each version (empty: all valid)."""
    found = []
    for doc in documents:
        metadata = doc.get("metadata") or {}
        where = "/".join(str(p) for p in (metadata.get("namespace"), metadata.get("name")) if p)
        name = f"{doc.get('kind', '?')} {where}"
        for version in checked or versions():
            validator = _validator(version, str(doc.get("apiVersion")), str(doc.get("kind")))
            if validator is None:
                found.append(
                    f"{name}: Kubernetes {version}: no such kind {doc.get('apiVersion')} {doc.get('kind')}"
                )
                continue
            for error in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(map(str, e.path))):
                path = ".".join(str(p) for p in error.path) or "(the object)"
                found.append(f"{name}: Kubernetes {version}: {path}: {error.message}")
    return found


@cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = _SCHEMAS / f"v{version}.0-local-strict"
    try:
        schema = json.loads((directory / f"{kind.lower()}-{api}.json").read_text())
    except FileNotFoundError:
        return None
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = _definitions(version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _definitions(version: str) -> Resource[Any]:
    text = (_SCHEMAS / f"v{version}.0-local-strict" / "_definitions.json").read_text()
    return Resource.from_contents(json.loads(text))
