"""The HCM's compiled local_reply_config (frozen): mappers and body formats for local replies.

Owns the shape ``hcm/local_reply.py`` reads: ``LocalReplyConfig`` (mappers in order, then the
default body format), ``ResponseMapper`` (a filter and what it rewrites), ``ReplyFilter`` (a
tree of the access-log filters Envoy allows there that meshproxy evaluates) and ``BodyFormat``
(a text or JSON format, parsed into ``Part``s once). Must not import asyncio, sockets or
generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshproxy.config.model import NO_MUTATIONS, HeaderMatcher, HeaderMutations

# One piece of a format: literal text, or a command operator with its argument
# (REQ: (header, alternative header, max length); others: ()).
Operator = Literal["text", "LOCAL_REPLY_BODY", "RESPONSE_CODE", "RESPONSE_FLAGS", "REQ"]
Part = tuple[Operator, str | tuple[str, str, int]]
# A JSON format's value: parts to render into a string, a lone operator kept as its own type, or
# a nested object.
JsonValue = tuple[Part, ...] | dict[str, "JsonValue"] | float | bool | None


@dataclass(frozen=True, slots=True)
class BodyFormat:
    content_type: str
    text: tuple[Part, ...] = ()  # text_format
    json: tuple[tuple[str, JsonValue], ...] | None = None  # json_format, when it is one
    omit_empty_values: bool = False


@dataclass(frozen=True, slots=True)
class ReplyFilter:
    """status (op, value), header, response flags (() means any flag), or and / or of others."""

    kind: Literal["status", "header", "flags", "and", "or"]
    op: Literal["EQ", "GE", "LE", "NE"] = "EQ"
    status: int = 0
    header: HeaderMatcher | None = None
    flags: tuple[str, ...] = ()
    filters: tuple[ReplyFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseMapper:
    filter: ReplyFilter
    status: int | None = None  # status_code
    body: bytes | None = None  # body (inline)
    body_format: BodyFormat | None = None  # body_format_override
    headers: HeaderMutations = NO_MUTATIONS  # headers_to_add


@dataclass(frozen=True, slots=True)
class LocalReplyConfig:
    mappers: tuple[ResponseMapper, ...] = ()
    body_format: BodyFormat | None = None
