"""``LocalReply``: a response the proxy makes itself, as a value.

One layer below ``context.py`` so the HTTP filters (``hcm/chain.py`` builds them for the
context) can answer with one. Must not import anything of meshproxy.
"""

from __future__ import annotations


class LocalReply:
    """A response the proxy generates: status, body, response flags and extra headers.

    The common ones are module constants, so deciding one allocates nothing.
    """

    __slots__ = ("body", "extra", "flags", "status")

    def __init__(
        self, status: int, body: bytes, flags: str, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.flags = flags
        self.extra = extra

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, {self.body!r}, {self.flags!r})"
