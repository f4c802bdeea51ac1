"""Kubernetes objects as JSON: how they are keyed, versioned and trimmed.

Owns the few facts every part of the discovery source reads off any object: its key
``(namespace, name)`` (namespace ``""`` for cluster-scoped kinds), its ``resourceVersion``, and
`keep_whole`, the store's default trimming. Must not depend on: a Kubernetes client, asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JsonObject = dict[str, Any]
Key = tuple[str, str]


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def resource_version(obj: Mapping[str, Any] | None) -> str:
    """An object's ``metadata.resourceVersion`` (``""`` for none)."""
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def keep_whole(obj: JsonObject) -> JsonObject:
    """The object without ``metadata.managedFields`` (server-side apply's bookkeeping)."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        obj["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return obj
