"""The controlplane's refusals, one class per gRPC status the CA answers with.

Owns the vocabulary the CA core uses to say no. Each class names its gRPC status code as a string
(``code``), so the sans-I/O core raises them without importing grpc and the servicer maps them
without a table. Configuration problems (tokens file, CA directory) are the shared
`meshproxy.errors.ConfigError`, whose ``problems`` name the file and line.

Must not depend on: grpc, asyncio.
"""

from __future__ import annotations

from typing import ClassVar

from meshproxy.errors import MeshproxyError


class ControlplaneError(MeshproxyError):
    """Base of every error the controlplane raises on purpose."""


class SignRefused(ControlplaneError):
    """The CA refused a Sign request; the message says why and what the caller can change."""

    code: ClassVar[str] = "UNKNOWN"


class Unauthenticated(SignRefused):
    """No bootstrap token, a malformed ``authorization`` header, or a token the CA does not know."""

    code = "UNAUTHENTICATED"


class PermissionDenied(SignRefused):
    """A well-formed request for an identity the presented token does not grant."""

    code = "PERMISSION_DENIED"


class InvalidRequest(SignRefused):
    """A request the CA never grants, whoever asks: a malformed CSR or one asking for too much."""

    code = "INVALID_ARGUMENT"


class Unavailable(SignRefused):
    """The CA could not check the caller's credential now (its authenticator's backend, such as
    the Kubernetes API, did not answer): the caller may try again."""

    code = "UNAVAILABLE"
