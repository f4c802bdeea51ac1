"""The HCM's local_reply_config applied to a local reply (Envoy's LocalReply), sans-I/O.

Owns Envoy's rules: the mappers are tried in order against the reply as made (its status and
response flags) and the request's headers; the first that matches may rewrite the status,
replace the body, add headers and override the body format; then the body format (the mapper's,
else the config's) renders the body with its content type (``%LOCAL_REPLY_BODY%`` is the body
so far; a JSON format's value that is one operator keeps its type, and with omit_empty_values
empty values are left out). Both codecs' streams call ``final_reply`` before writing any
local reply. Must not import asyncio,
sockets or either codec package.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from meshproxy.hcm.reply import LocalReply
from meshproxy.router.headers import apply_mutations, compile_mutations
from meshproxy.router.match import compile_headers_match

if TYPE_CHECKING:
    from meshproxy.config.local_reply import BodyFormat, JsonValue, LocalReplyConfig, Part, ReplyFilter
    from meshproxy.config.model import HeaderMatcher, HeaderMutations
    from meshproxy.hcm.filters import FilterStream


def final_reply(config: LocalReplyConfig | None, stream: FilterStream, reply: LocalReply) -> LocalReply:
    """``reply`` as the connection manager's local_reply_config (None: none) says to send it."""
    return reply if config is None else rewrite(config, stream, reply)


def rewrite(config: LocalReplyConfig, stream: FilterStream, reply: LocalReply) -> LocalReply:
    status, body, fmt = reply.status, reply.body, config.body_format
    extra = list(reply.extra)
    for mapper in config.mappers:
        if _matches(mapper.filter, reply, stream):
            status = mapper.status or status
            body = body if mapper.body is None else mapper.body
            fmt = mapper.body_format or fmt
            level = _level(mapper.headers)
            if level is not None:
                apply_mutations(extra, level)
            break
    content_type = reply.content_type
    if fmt is not None:
        body = _render(fmt, body, status, reply.flags, stream)
        content_type = fmt.content_type.encode()
    return LocalReply(status, body, reply.flags, tuple(extra), reply.grpc_status, content_type)


def _matches(f: ReplyFilter, reply: LocalReply, stream: FilterStream) -> bool:
    kind = f.kind
    if kind == "status":
        s, v = reply.status, f.status
        return s == v if f.op == "EQ" else s >= v if f.op == "GE" else s <= v if f.op == "LE" else s != v
    if kind == "header":
        assert f.header is not None
        return _header_test(f.header)(stream.headers, stream.authority or b"", stream.url)
    if kind == "flags":
        flags = reply.flags.split(",")
        return reply.flags != "-" and (not f.flags or any(flag in f.flags for flag in flags))
    results = (_matches(inner, reply, stream) for inner in f.filters)
    return all(results) if kind == "and" else any(results)


# Compiled once per configured matcher and mutation set (bounded: the configuration's).
@functools.cache
def _header_test(matcher: HeaderMatcher) -> Any:
    return compile_headers_match((matcher,))


@functools.cache
def _level(mutations: HeaderMutations) -> Any:
    return compile_mutations(mutations)


def _render(fmt: BodyFormat, body: bytes, status: int, flags: str, stream: FilterStream) -> bytes:
    values = (body.decode("utf-8", "replace"), status, flags)
    if fmt.json is None:
        return "".join(str(_value(p, values, stream)) for p in fmt.text).encode()
    document = _object(fmt.json, values, stream, fmt.omit_empty_values)
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _object(
    fields: tuple[tuple[str, JsonValue], ...] | dict[str, JsonValue],
    values: tuple[str, int, str],
    stream: FilterStream,
    omit_empty: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items() if isinstance(fields, dict) else fields:
        if isinstance(value, tuple):
            if len(value) == 1 and value[0][0] != "text":
                rendered: Any = _value(value[0], values, stream)  # one operator: its own type
            else:
                rendered = "".join(str(_value(p, values, stream)) for p in value)
        elif isinstance(value, dict):
            rendered = _object(value, values, stream, omit_empty)
        else:
            rendered = value
        if not (omit_empty and rendered in ("", None, {})):
            out[key] = rendered
    return out


def _value(part: Part, values: tuple[str, int, str], stream: FilterStream) -> Any:
    op, arg = part
    if op == "text":
        return arg
    if op == "LOCAL_REPLY_BODY":
        return values[0]
    if op == "RESPONSE_CODE":
        return values[1]
    if op == "RESPONSE_FLAGS":
        return values[2]
    assert isinstance(arg, tuple)  # REQ's (header, alternative, max length)
    header, alternative, limit = arg
    value = _header(stream, header) or (_header(stream, alternative) if alternative else None)
    if value is None:
        return "-"
    text = value.decode("latin-1")
    return text[:limit] if limit else text


def _header(stream: FilterStream, name: str) -> bytes | None:
    if name == ":path":
        return stream.url
    if name in (":authority", "host"):
        return stream.authority
    if name == ":method":
        return stream.method
    wanted = name.encode()
    return next((v for n, v in stream.headers if n == wanted), None)
