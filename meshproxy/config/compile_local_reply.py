"""Compiles the HCM's local_reply_config into ``local_reply.LocalReplyConfig``.

Owns Envoy's rules for the message as meshproxy runs them: each mapper needs a filter
(status_code_filter, header_filter, response_flag_filter, and_filter, or_filter; the other
access-log filters are refused with their path), may rewrite the status (200..599), replace the
body (inline), override the body format and add headers; a body format is text_format,
text_format_source (inline) or json_format, with the command operators %LOCAL_REPLY_BODY%,
%RESPONSE_CODE%, %RESPONSE_FLAGS% and %REQ(header?alternative):max%; any other operator is
refused, naming it. Must not depend on the listener or route compilers.
"""

from __future__ import annotations

import re
from typing import Any, cast

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from meshproxy.config.compile_common import Ctx, _header_value_option, header_matcher
from meshproxy.config.local_reply import (
    BodyFormat,
    JsonValue,
    LocalReplyConfig,
    Part,
    ReplyFilter,
    ResponseMapper,
)
from meshproxy.config.model import HeaderMutations

_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%")
_PLAIN = ("LOCAL_REPLY_BODY", "RESPONSE_CODE", "RESPONSE_FLAGS")
_KNOWN = "%LOCAL_REPLY_BODY%, %RESPONSE_CODE%, %RESPONSE_FLAGS% and %REQ(header)%"
_OPS = {v: k for k, v in accesslog_pb2.ComparisonFilter.Op.items()}


def local_reply_config(msg: hcm.LocalReplyConfig, ctx: Ctx) -> LocalReplyConfig | None:
    mark = ctx.mark()
    mappers = [_mapper(m, c) for m, c in ctx.each("mappers", msg.mappers)]
    body_format = _format(msg.body_format, ctx.at("body_format")) if msg.HasField("body_format") else None
    if not ctx.clean_since(mark):
        return None
    return LocalReplyConfig(tuple(m for m in mappers if m is not None), body_format)


def _mapper(msg: hcm.ResponseMapper, ctx: Ctx) -> ResponseMapper | None:
    if not msg.HasField("filter"):
        ctx.at("filter").problem("is required")
        return None
    reply_filter = _filter(msg.filter, ctx.at("filter"))
    status = msg.status_code.value if msg.HasField("status_code") else None
    if status is not None and not 200 <= status < 600:
        ctx.at("status_code").problem(f"{status} is not an HTTP status (200..599)")
    body = _data(msg.body, ctx.at("body")) if msg.HasField("body") else None
    fmt = (
        _format(msg.body_format_override, ctx.at("body_format_override"))
        if msg.HasField("body_format_override")
        else None
    )
    headers = [
        option
        for entry, c in ctx.each("headers_to_add", msg.headers_to_add)
        if (option := _header_value_option(entry, c)) is not None
    ]
    if reply_filter is None:
        return None
    return ResponseMapper(reply_filter, status, body, fmt, HeaderMutations(tuple(headers)))


def _filter(msg: accesslog_pb2.AccessLogFilter, ctx: Ctx) -> ReplyFilter | None:
    kind = msg.WhichOneof("filter_specifier")
    if kind == "status_code_filter":
        comparison = msg.status_code_filter.comparison
        op = _OPS.get(comparison.op, "EQ")
        return ReplyFilter("status", op=op, status=comparison.value.default_value)
    if kind == "header_filter":
        matcher = header_matcher(msg.header_filter.header, ctx.at("header_filter").at("header"))
        return None if matcher is None else ReplyFilter("header", header=matcher)
    if kind == "response_flag_filter":
        return ReplyFilter("flags", flags=tuple(msg.response_flag_filter.flags))
    if kind in ("and_filter", "or_filter"):
        group = getattr(msg, kind)
        inner = [_filter(f, c) for f, c in ctx.at(kind).each("filters", group.filters)]
        if any(f is None for f in inner):
            return None
        return ReplyFilter(
            "and" if kind == "and_filter" else "or", filters=tuple(cast(list[ReplyFilter], inner))
        )
    if kind is None:
        ctx.problem("needs a filter")
    else:
        ctx.at(kind).problem(
            "is not supported; use status_code_filter, header_filter, response_flag_filter, "
            "and_filter or or_filter"
        )
    return None


def _data(msg: base_pb2.DataSource, ctx: Ctx) -> bytes | None:
    kind = msg.WhichOneof("specifier")
    if kind == "inline_string":
        return msg.inline_string.encode()
    if kind == "inline_bytes":
        return msg.inline_bytes
    ctx.problem("give inline_string or inline_bytes")
    return None


def _format(msg: substitution_format_string_pb2.SubstitutionFormatString, ctx: Ctx) -> BodyFormat | None:
    if msg.formatters:
        ctx.at("formatters").problem("formatter extensions are not supported")
    kind = msg.WhichOneof("format")
    if kind == "json_format":
        document = json_format.MessageToDict(msg.json_format)
        fields = _json(document, ctx.at("json_format"))
        if fields is None:
            return None
        content_type = msg.content_type or "application/json"
        return BodyFormat(content_type, json=fields, omit_empty_values=msg.omit_empty_values)
    if kind == "text_format":
        text = msg.text_format
    elif kind == "text_format_source":
        data = _data(msg.text_format_source, ctx.at("text_format_source"))
        if data is None:
            return None
        text = data.decode("utf-8", "replace")
    else:
        ctx.problem("give text_format, text_format_source or json_format")
        return None
    parts = parse(text, ctx.at(kind))
    if parts is None:
        return None
    return BodyFormat(msg.content_type or "text/plain", text=parts, omit_empty_values=msg.omit_empty_values)


def _json(document: dict[str, Any], ctx: Ctx) -> tuple[tuple[str, JsonValue], ...] | None:
    fields: list[tuple[str, JsonValue]] = []
    ok = True
    for key, value in document.items():
        here = ctx.at(key)
        if isinstance(value, str):
            parts = parse(value, here)
            ok = ok and parts is not None
            fields.append((key, parts or ()))
        elif isinstance(value, dict):
            inner = _json(value, here)
            ok = ok and inner is not None
            fields.append((key, dict(inner or ())))
        elif isinstance(value, list):
            here.problem("lists are not supported in json_format")
            ok = False
        else:
            fields.append((key, value))
    return tuple(fields) if ok else None


def parse(text: str, ctx: Ctx) -> tuple[Part, ...] | None:
    """A format string as literal text and command operators."""
    parts: list[Part] = []
    at = 0
    ok = True
    for m in _OPERATOR.finditer(text):
        if m.start() > at:
            parts.append(("text", text[at : m.start()]))
        at = m.end()
        name, arg, limit = m.group(1), m.group(2), m.group(3)
        if name in _PLAIN and arg is None:
            parts.append((name, ""))  # type: ignore[arg-type]  # one of _PLAIN
        elif name == "REQ" and arg:
            header, _, alternative = arg.partition("?")
            parts.append(("REQ", (header.lower(), alternative.lower(), int(limit) if limit else 0)))
        else:
            ctx.problem(f'"{m.group(0)}" is not a command operator meshproxy formats; use {_KNOWN}')
            ok = False
    if at < len(text):
        parts.append(("text", text[at:]))
    return tuple(parts) if ok else None
