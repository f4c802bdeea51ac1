"""``LocalReply``: a response the proxy makes itself, as a value.

One layer below ``context.py`` so the HTTP filters (``hcm/chain.py`` builds them for the
context) can answer with one. Must not import anything of meshproxy.
"""

from __future__ import annotations


class LocalReply:
    """A response the proxy generates: status, body, response flags and extra headers; to a gRPC
    request, ``grpc_status`` when it is not the one Envoy maps ``status`` to (a fault's abort).

    The common ones are module constants, so deciding one allocates nothing.
    """

    __slots__ = ("body", "content_type", "extra", "flags", "grpc_status", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        flags: str,
        extra: tuple[tuple[bytes, bytes], ...] = (),
        grpc_status: int | None = None,
        content_type: bytes = b"text/plain",
    ) -> None:
        self.status = status
        self.body = body
        self.flags = flags
        self.extra = extra
        self.grpc_status = grpc_status
        self.content_type = content_type  # of a non-empty body

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, {self.body!r}, {self.flags!r})"
