"""Pieces every part of the proto → model compiler shares.

Owns the field-path context (``Ctx``) that turns each rejection into a "field.path: message"
problem, and the conversions more than one message needs: durations, wrapped scalars, socket
addresses, string, regex and header matchers, header mutations and access logs; and ``finish``, which
runs a compiler's step form (``..._steps``: a generator that yields between small pieces so
an event loop can run, and returns the result) in one go.
Must not depend on the listener, route or cluster compilers (they depend on this), nor on asyncio
or sockets; generated protobuf code is allowed here, as in every ``compile*`` module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.type.matcher.v3 import regex_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from meshproxy.config.filter_config import Percent
from meshproxy.config.model import (
    NO_MUTATIONS,
    AccessLog,
    AppendAction,
    HeaderMatcher,
    HeaderMutations,
    HeaderValueOption,
    SocketAddress,
    StringMatch,
)
from meshproxy.config.regex import DEFAULT_MAX_PROGRAM_SIZE, Regex, RegexError, compile_regex

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def finish(steps: Generator[None, None, T]) -> T:
    """Runs a step generator to its end in one go; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@dataclass(slots=True)
class Ctx:
    """Where the compiler is in the message tree, and where its findings go.

    ``problems`` and ``cluster_refs`` are shared by every child context, so a whole resource
    (or a whole bootstrap) collects into one list: compile on, never stop at the first problem.
    """

    path: str
    problems: list[str]
    # (field path, cluster name) of every cluster a route or tcp_proxy names; checked against
    # the defined clusters by whoever knows them (the bootstrap compiler, later the xDS client).
    cluster_refs: list[tuple[str, str]] = field(default_factory=list)
    # static_resources.secrets by name: what an SDS secret config without sds_config refers to.
    secrets: dict[str, Any] = field(default_factory=dict)

    def at(self, name: str, index: int | str | None = None) -> Ctx:
        path = f"{self.path}.{name}" if self.path else name
        if isinstance(index, int):
            path += f"[{index}]"
        elif index is not None:
            path += f'["{index}"]'
        return Ctx(path, self.problems, self.cluster_refs, self.secrets)

    def each(self, name: str, items: Iterable[T]) -> Iterator[tuple[T, Ctx]]:
        """Pairs each element of the repeated field ``name`` with its context ``name[i]``."""
        for i, item in enumerate(items):
            yield item, self.at(name, i)

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.path}: {message}" if self.path else message)

    def mark(self) -> int:
        return len(self.problems)

    def clean_since(self, mark: int) -> bool:
        return len(self.problems) == mark

    def refer_cluster(self, name: str) -> None:
        self.cluster_refs.append((self.path, name))


def type_url(message_class: type[Message]) -> str:
    return "type.googleapis.com/" + message_class.DESCRIPTOR.full_name


def unpack(config: AnyProto, message_class: type[M]) -> M:
    message = message_class()
    config.Unpack(message)
    return message


def reject_fields(msg: Message, names: Iterable[str], ctx: Ctx, reason: str) -> None:
    """One problem per field of ``names`` that is set on ``msg``: fields whose silent omission
    would change what the configuration means (a match that would match more, say)."""
    present = {descriptor.name for descriptor, _ in msg.ListFields()}
    for name in names:
        if name in present:
            ctx.at(name).problem(reason)


def duration(msg: Message, name: str, ctx: Ctx, default: float) -> float:
    """A google.protobuf.Duration field as float seconds; ``default`` when the field is absent."""
    if not msg.HasField(name):
        return default
    value = getattr(msg, name)
    seconds = value.seconds + value.nanos / 1e9
    if seconds < 0:
        ctx.at(name).problem(f"must not be negative (got {seconds:g}s)")
        return default
    return seconds


def enum_name(msg: Message, name: str) -> str:
    """The name of an enum field's value, or its number when the proto does not define it."""
    value = getattr(msg, name)
    known = msg.DESCRIPTOR.fields_by_name[name].enum_type.values_by_number.get(value)
    return known.name if known else str(value)


def wrapped(msg: Message, name: str, default: Any) -> Any:
    """The value of a google.protobuf wrapper field (BoolValue, UInt32Value...), or ``default``."""
    return getattr(msg, name).value if msg.HasField(name) else default


def port_in_range(port: int, ctx: Ctx, *, allow_zero: bool = False) -> bool:
    lowest = 0 if allow_zero else 1
    if lowest <= port <= 65535:
        return True
    ctx.problem(f"port {port} is out of range; use {lowest}..65535")
    return False


def socket_address(
    address: address_pb2.Address,
    ctx: Ctx,
    *,
    require_ip: str | None,
    allow_zero_port: bool = False,
    udp: bool = False,
) -> SocketAddress | None:
    """An envoy.config.core.v3.Address as host and numeric port (TCP, or UDP where ``udp``: a
    QUIC listener). ``require_ip`` says why the address must be an IP literal here, or is None
    where a host name will do."""
    kind = address.WhichOneof("address")
    if kind != "socket_address":
        what = f"{kind} addresses are" if kind else "an empty address is"
        ctx.problem(f"{what} not supported; give a socket_address with address and port_value")
        return None
    ctx = ctx.at("socket_address")
    sock = address.socket_address
    mark = ctx.mark()
    if udp and sock.protocol != address_pb2.SocketAddress.UDP:
        ctx.at("protocol").problem("a QUIC listener (udp_listener_config) binds UDP; set protocol: UDP")
    elif not udp and sock.protocol != address_pb2.SocketAddress.TCP:
        ctx.at("protocol").problem("only TCP is supported (UDP: a QUIC listener with udp_listener_config)")
    if not sock.address:
        ctx.at("address").problem("is required (an IP address, or a host name for STRICT_DNS)")
    elif require_ip and not _is_ip(sock.address):
        ctx.at("address").problem(f'"{sock.address}" is not an IP address; {require_ip}')
    if sock.WhichOneof("port_specifier") == "named_port":
        ctx.at("named_port").problem("named ports are not supported; use port_value")
    else:
        port_in_range(sock.port_value, ctx.at("port_value"), allow_zero=allow_zero_port)
    if not ctx.clean_since(mark):
        return None
    return SocketAddress(sock.address, sock.port_value, "UDP" if udp else "TCP")


def bind_address(msg: Message, ctx: Ctx, *, who: str, udp: bool = False) -> SocketAddress | None:
    """The ``address`` a listener or the admin interface binds: an IP literal; port 0 asks the
    kernel for a free port (what tests do)."""
    return socket_address(
        msg.address,
        ctx.at("address"),
        require_ip=f"{who} binds to an IP address",
        allow_zero_port=True,
        udp=udp,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- matchers

# The set field of a StringMatcher's match_pattern, or one of HeaderMatcher's deprecated direct
# fields, → the model's StringMatch.kind.
_STRING_KINDS: dict[str, Literal["exact", "prefix", "suffix", "contains", "regex"]] = {
    "exact": "exact",
    "prefix": "prefix",
    "suffix": "suffix",
    "contains": "contains",
    "safe_regex": "regex",
    "exact_match": "exact",
    "prefix_match": "prefix",
    "suffix_match": "suffix",
    "contains_match": "contains",
    "safe_regex_match": "regex",
}


def string_match(msg: Message, oneof: str, ctx: Ctx, *, ignore_case: bool = False) -> StringMatch | None:
    """The one conversion to StringMatch: the set field of ``oneof`` on ``msg``, which is either an
    envoy.type.matcher.v3.StringMatcher ("match_pattern") or a HeaderMatcher using its deprecated
    direct fields ("header_match_specifier")."""
    supported = "exact, prefix, suffix, contains or safe_regex"
    which = msg.WhichOneof(oneof)
    if which is None:
        ctx.problem(f"a string matcher needs one of {supported}")
        return None
    ctx = ctx.at(which)
    kind = _STRING_KINDS.get(which)
    if kind is None:
        ctx.problem(f"is not supported; use {supported}")
        return None
    if kind == "regex":
        pattern = regex(getattr(msg, which), ctx)
        return None if pattern is None else StringMatch("regex", pattern.source, ignore_case, pattern)
    value: str = getattr(msg, which)
    if not value and kind != "exact":
        ctx.problem(f"an empty {kind} matches everything; it must not be empty")
        return None
    return StringMatch(kind, value, ignore_case)


def regex(matcher: regex_pb2.RegexMatcher, ctx: Ctx) -> Regex | None:
    """A RegexMatcher compiled with RE2 (``regex.py``), within its program-size limit:
    ``google_re2.max_program_size`` (deprecated in Envoy, still honoured) or Envoy's default."""
    if not matcher.regex:
        ctx.at("regex").problem("is required")
        return None
    limit = DEFAULT_MAX_PROGRAM_SIZE
    if matcher.google_re2.HasField("max_program_size"):
        limit = matcher.google_re2.max_program_size.value
    try:
        return compile_regex(matcher.regex, limit)
    except RegexError as err:
        ctx.at("regex").problem(str(err))
        return None


# --------------------------------------------------------------------------- headers

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_APPEND_ACTIONS: dict[int, AppendAction] = {
    base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD: "append_if_exists_or_add",
    base_pb2.HeaderValueOption.ADD_IF_ABSENT: "add_if_absent",
    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD: "overwrite_if_exists_or_add",
    base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS: "overwrite_if_exists",
}


def header_mutations(msg: Message, direction: Literal["request", "response"], ctx: Ctx) -> HeaderMutations:
    """``{direction}_headers_to_add`` and ``{direction}_headers_to_remove`` of ``msg`` (a route
    configuration, virtual host, route or weighted cluster)."""
    to_add = tuple(
        option
        for entry, c in ctx.each(f"{direction}_headers_to_add", getattr(msg, f"{direction}_headers_to_add"))
        if (option := _header_value_option(entry, c)) is not None
    )
    to_remove = []
    for name, c in ctx.each(f"{direction}_headers_to_remove", getattr(msg, f"{direction}_headers_to_remove")):
        if name.lower() == "host":
            c.problem('"host" cannot be removed')
        elif header_name(name, c):
            to_remove.append(name.lower())
    return HeaderMutations(to_add, tuple(to_remove)) if to_add or to_remove else NO_MUTATIONS


def _header_value_option(option: base_pb2.HeaderValueOption, ctx: Ctx) -> HeaderValueOption | None:
    header = option.header
    if not header_name(header.key, ctx.at("header").at("key")):
        return None
    value = header.raw_value.decode("latin-1") if header.raw_value else header.value
    if any(c in value for c in "\r\n\0"):
        ctx.at("header").at("value").problem("must not contain CR, LF or NUL")
        return None
    if "%" in value:
        # Envoy reads a header value as a format string: %COMMAND% is substituted per request
        # and a literal % is written %%. Sending the command text instead would change what the
        # upstream or client sees without a word, so substitutions are refused.
        if "%" in value.replace("%%", ""):
            ctx.at("header").at("value").problem(
                f"{value!r} asks for a substitution (%…%), which is not supported; write a literal % as %%"
            )
            return None
        value = value.replace("%%", "%")
    action: AppendAction
    if option.HasField("append"):
        if option.append_action != base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD:
            ctx.at("append").problem(
                "is deprecated and cannot be combined with append_action; use append_action"
            )
            return None
        action = "append_if_exists_or_add" if option.append.value else "overwrite_if_exists_or_add"
    elif option.append_action in _APPEND_ACTIONS:
        action = _APPEND_ACTIONS[option.append_action]
    else:
        ctx.at("append_action").problem(f"{option.append_action} is not a HeaderAppendAction")
        return None
    return HeaderValueOption(header.key.lower(), value, action)


def header_name(name: str, ctx: Ctx) -> bool:
    """Whether ``name`` is an RFC 9110 token; if not, a problem at ``ctx``."""
    if _TOKEN.fullmatch(name):
        return True
    hint = " (pseudo-headers cannot be added or removed)" if name.startswith(":") else ""
    ctx.problem(f'"{name}" is not a valid header name{hint}')
    return False


# --------------------------------------------------------------------------- access logs

_FILE_LOG = type_url(file_pb2.FileAccessLog)
_STDOUT_LOG = type_url(stream_pb2.StdoutAccessLog)


def access_logs(entries: Iterable[accesslog_pb2.AccessLog], ctx: Ctx) -> tuple[AccessLog, ...]:
    """envoy.access_loggers.file and envoy.access_loggers.stdout; meshproxy writes its own line
    format, so the loggers' format fields are ignored."""
    logs = []
    for entry, c in ctx.each("access_log", entries):
        if entry.HasField("filter"):
            c.at("filter").problem(
                "access log filters are not supported; remove the filter to log every request"
            )
        url = entry.typed_config.type_url
        if url == _FILE_LOG:
            path = unpack(entry.typed_config, file_pb2.FileAccessLog).path
            if path:
                logs.append(AccessLog(path))
            else:
                c.at("typed_config").at("path").problem("is required")
        elif url == _STDOUT_LOG:
            logs.append(AccessLog("/dev/stdout"))
        else:
            what = f'"{url}"' if url else "an access log without typed_config"
            c.problem(
                f"{what} is not supported; use envoy.access_loggers.file (FileAccessLog) "
                "or envoy.access_loggers.stdout (StdoutAccessLog)"
            )
    return tuple(logs)


def header_matcher(msg: rc.HeaderMatcher, ctx: Ctx) -> HeaderMatcher | None:
    if not msg.name:
        ctx.at("name").problem("is required")
        return None
    kind = msg.WhichOneof("header_match_specifier")
    if kind == "range_match":
        ctx.at("range_match").problem("is not supported; use string_match with safe_regex")
        return None
    common = {"invert": msg.invert_match, "missing_as_empty": msg.treat_missing_header_as_empty}
    if kind is None:  # Envoy: no specifier means "the header is present"
        return HeaderMatcher(msg.name.lower(), None, **common)
    if kind == "present_match":
        return HeaderMatcher(msg.name.lower(), None, present=msg.present_match, **common)
    if kind == "string_match":
        match = string_match(
            msg.string_match,
            "match_pattern",
            ctx.at("string_match"),
            ignore_case=msg.string_match.ignore_case,
        )
    else:  # the deprecated exact_match, prefix_match, ... fields
        match = string_match(msg, "header_match_specifier", ctx)
    return None if match is None else HeaderMatcher(msg.name.lower(), match, **common)


_DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}


def fractional_percent(value: percent_pb2.FractionalPercent, ctx: Ctx) -> Percent | None:
    """A FractionalPercent; Envoy caps a numerator above its denominator at 100%."""
    denominator = _DENOMINATORS.get(value.denominator)
    if denominator is None:
        ctx.at("denominator").problem(f"{value.denominator} is not a DenominatorType")
        return None
    return Percent(min(value.numerator, denominator), denominator)
