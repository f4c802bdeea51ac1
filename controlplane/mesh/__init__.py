"""The mesh config: a concise YAML description of services, translated into xDS resources.

- `model`: the validated config (frozen dataclasses);
- `load`: YAML → model, every problem with its path (`load_mesh`, `validate_mesh`);
- `translate`: model → resources per node group (`translate`, `DEFAULT_GROUP`);
- `envoy`: how each concept is spelled in Envoy's v3 API;
- ``default.yaml``: the embedded default mesh (`default_mesh_text`), the demo's.

Must not depend on: grpc, asyncio (the management API and the app compose these).
"""

from __future__ import annotations

from importlib import resources

from controlplane.mesh.load import load_mesh, validate_mesh
from controlplane.mesh.model import Mesh
from controlplane.mesh.translate import DEFAULT_GROUP, translate

__all__ = ["DEFAULT_GROUP", "Mesh", "default_mesh_text", "load_mesh", "translate", "validate_mesh"]


def default_mesh_text() -> str:
    """The embedded default mesh YAML (``controlplane/mesh/default.yaml``)."""
    return resources.files(__package__).joinpath("default.yaml").read_text(encoding="utf-8")
