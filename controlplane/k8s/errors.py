"""The Kubernetes package's refusals.

Owns the errors raised while reading Kubernetes objects meant for the mesh (a workload's
``meshproxy.io/`` annotations, a manifest given to ``meshctl inject``). Each message names the
object and the field path (``metadata.annotations["meshproxy.io/concurrency"]``) and what to
write instead. Must not depend on: grpc, asyncio, a Kubernetes client.
"""

from __future__ import annotations

from controlplane.errors import ControlplaneError


class KubernetesError(ControlplaneError):
    """Base of the errors of ``controlplane.k8s``."""


class AnnotationError(KubernetesError):
    """One or more of a workload's ``meshproxy.io/`` annotations or labels has a bad value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class InjectionError(KubernetesError):
    """A manifest or an object that the injector cannot inject (the message says which and why)."""


class ApiError(KubernetesError):
    """The API server answered ``path`` with an error (``code`` 0: no valid answer at all)."""

    def __init__(self, path: str, code: int, reason: str, message: str) -> None:
        super().__init__(f"{path}: {code or 'no answer'} {reason}: {message}".replace(" : ", ": "))
        self.path = path
        self.code = code
        self.reason = reason

    @property
    def gone(self) -> bool:
        """410 Gone (``Expired``): the resourceVersion is older than the server keeps; relist."""
        return self.code == 410
