"""The fuzz targets: one function per parser that sees outside bytes, each with its oracle.

Owns ``TARGETS`` (name -> ``Target``): a target takes one input (bytes), runs it through the real
parser, and returns normally when the outcome is allowed. It raises:

- ``Finding`` when the oracle disagrees (a framing disagreement with ``rfc9112``, bytes a strict
  upstream refuses, a response poisoning the next one, an XFCC element that does not read back);
  ``Finding.kind`` names the class, so that a class already known and listed with its reproducers
  in ``test_findings.py`` can be told from a new one (``KNOWN_OPEN``);
- anything else (an exception type the parser must not raise, ``inproc.Hang``) is a crash.

Targets: ``http1_request`` (a client's bytes into ``DownstreamConnection``, differential against
``rfc9112.parse_requests``), ``http1_response`` (an upstream's bytes into ``UpstreamConnection``,
against ``rfc9112.parse_responses``), ``http2_frames`` (frames after the preface into
``H2Downstream``; what reaches the HTTP/1.1 upstream must frame strictly), ``xfcc`` (a peer
certificate and URI SAN into the SPIFFE parser and XFCC element), ``bootstrap`` (text into
``parse_bootstrap``: only ``ConfigError``), ``bootstrap_proto`` (a binary Bootstrap into
``compile_bootstrap``: only ``ConfigError``), ``mesh`` (text into ``load_mesh`` then
``translate``: only ``ConfigError``), ``mesh_doc`` (a JSON document into ``validate_mesh`` then
``translate``: only ``ConfigError``), ``xds`` (bytes into the four resource decoders and
compilers: problems, never an exception). The ``_proto`` and ``_doc`` targets feed the compilers
and validators behind the text loaders through a fast parser (upb, C JSON), so they get the
inputs the text targets spend in PyYAML and protobuf's pure-Python JSON reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError

from controlplane.mesh import load_mesh, translate, validate_mesh
from meshproxy.config import limits
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.compile import compile_bootstrap
from meshproxy.errors import ConfigError, MeshproxyError
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.xfcc import format_element
from meshproxy.xds import resources
from tests.fuzz import rfc9112
from tests.fuzz.inproc import InProcessProxy, Run


class Finding(Exception):
    """The oracle disagrees with what the parser did."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Known:
    """A finding already reported whose fix is still to come, its inputs listed in
    ``test_findings.REPRODUCERS``: the target, the finding kinds it shows as, and a signature of
    the input (a regex), so that only inputs of that shape are tolerated, not the whole kind."""

    target: str
    kinds: tuple[str, ...]
    signature: Callable[[bytes], object]


KNOWN_OPEN: dict[str, Known] = {}


def known(target: str, kind: str, data: bytes) -> str | None:
    """The name of the known open finding ``data`` shows, or None for a new one."""
    for name, k in KNOWN_OPEN.items():
        if k.target == target and kind in k.kinds and k.signature(data):
            return name
    return None


@dataclass(frozen=True, slots=True)
class Target:
    run: Callable[[bytes], None]
    max_len: int  # libFuzzer's -max_len for this target


class _Errors(logging.Handler):
    """ERROR records of the proxy's loggers: an internal error the proxy caught is a crash too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_proxy: InProcessProxy | None = None
_errors = _Errors()


def _the_proxy() -> InProcessProxy:
    global _proxy
    if _proxy is None:
        _proxy = InProcessProxy()
        logging.getLogger("meshproxy").addHandler(_errors)
        _proxy.loop.set_exception_handler(lambda loop, context: _errors.records.append(_record(context)))
    return _proxy


def _record(context: dict[str, object]) -> logging.LogRecord:
    exc = context.get("exception")
    return logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 0, "%s: %r", (context.get("message"), exc), None
    )


def _raise_internal_errors() -> None:
    if _errors.records:
        record = _errors.records[0]
        _errors.records.clear()
        detail = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            detail += f": {record.exc_info[1]!r}"
        raise RuntimeError(f"the proxy logged an internal error: {detail}")


# ------------------------------------------------------------------ HTTP/1.1


def _origin(target: bytes) -> bytes:
    """The origin-form the proxy sends upstream for a request-target (absolute-form reduced)."""
    if target.startswith(b"/") or target == b"*":
        return target
    rest = target.split(b"://", 1)[1]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[cut:]
    return path if path.startswith(b"/") else b"/" + path


def _same(up: rfc9112.Message, want: rfc9112.Message, *, partial: bool) -> bool:
    if up.method != want.method or up.target != _origin(want.target):
        return False
    return want.body.startswith(up.body) if partial else up.body == want.body


def _check_upstream(run: Run, model: rfc9112.Framing) -> None:
    """Every request the upstream framed is one the model framed, in order, with the same body."""
    for upstream in run.upstreams:
        framing = upstream.framing()
        if framing.state == "refused":
            raise Finding("invalid-upstream-bytes", f"{framing.reason}: {upstream.received[:300]!r}")
    wanted = list(model.messages)
    if model.partial is not None:
        wanted.append(model.partial)
    seen = list(run.upstream_requests)
    position = 0
    for up in seen:
        while position < len(wanted) and not (
            wanted[position].complete and _same(up, wanted[position], partial=False)
        ):
            position += 1
        if position == len(wanted):
            _mismatch(up, model)
        position += 1
    for upstream in run.upstreams:
        tail = upstream.framing().partial
        if tail is not None and tail.method and not any(_same(tail, w, partial=True) for w in wanted):
            _mismatch(tail, model)


def _mismatch(up: rfc9112.Message, model: rfc9112.Framing) -> None:
    what = f"{up.method!r} {up.target!r} body {up.body[:80]!r}"
    partial = model.partial
    if (
        model.state == "refused"
        and partial is not None
        and (up.method, up.target)
        == (
            partial.method,
            _origin(partial.target),
        )
    ):
        raise Finding(f"accepted-refused:{model.reason}", f"the upstream got {what}")
    framed = [(m.method, m.target, m.body[:40]) for m in model.messages]
    raise Finding("framing-mismatch", f"the upstream got {what}; the model framed {framed} ({model.state})")


def http1_request(data: bytes) -> None:
    proxy = _the_proxy()
    run = proxy.http1(data)
    _raise_internal_errors()
    _check_upstream(run, rfc9112.parse_requests(data))


# Two pipelined requests: the fuzzed response answers the first; the second must still get its own.
_TWO_GETS = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"


def http1_response(data: bytes) -> None:
    proxy = _the_proxy()
    run = proxy.http1(_TWO_GETS, [data])
    _raise_internal_errors()
    assert run.transport is not None
    down = rfc9112.parse_responses(run.downstream, [b"GET", b"GET"], closed=True)
    if down.state in ("refused", "tunnel"):
        raise Finding(
            f"client-framing-{down.state}:{down.reason}", f"the client got {run.downstream[:300]!r}"
        )
    final = [m for m in down.messages if m.status >= 200]
    if len(final) == 2 and (final[1].status, final[1].body) != (200, b"ok"):
        raise Finding(
            "response-poisoning", f"the second request got {final[1].status} {final[1].body[:80]!r}"
        )
    if not final or final[0].values(b"server") == [b"meshproxy"]:
        return  # a local reply (502 for a bad response): refusing more than the model is fine
    model = rfc9112.parse_responses(data, [b"GET"], closed=True)
    model_final = [m for m in model.messages if m.status >= 200]
    if not model_final:
        raise Finding(f"accepted-refused-response:{model.reason}", f"the client got {final[0].status}")
    if (final[0].status, final[0].body) != (model_final[0].status, model_final[0].body):
        raise Finding(
            "response-framing-mismatch",
            f"client got {final[0].status} {final[0].body[:80]!r}, model {model_final[0].status} "
            f"{model_final[0].body[:80]!r}",
        )


# ------------------------------------------------------------------ HTTP/2


def http2_frames(data: bytes) -> None:
    proxy = _the_proxy()
    run = proxy.http2(data)
    _raise_internal_errors()
    for upstream in run.upstreams:
        framing = rfc9112.parse_requests(upstream.received, declined_upgrades=True)
        if framing.state == "refused":
            raise Finding(f"h2-to-h1-invalid:{framing.reason}", f"{upstream.received[:300]!r}")


# ------------------------------------------------------------------ XFCC


_LOCAL = SpiffeId.parse("spiffe://fuzz.local/ns/default/sa/proxy")


def parse_xfcc(value: str) -> list[list[tuple[str, str]]]:
    """Envoy's XFCC grammar, strictly: elements by ``,``, pairs by ``;``, ``Key=value`` with a
    value bare or double-quoted (``\\`` escapes). Raises ValueError on anything else."""
    elements: list[list[tuple[str, str]]] = [[]]
    i, n = 0, len(value)
    while i < n:
        eq = value.find("=", i)
        if eq < 0:
            raise ValueError("a pair without '='")
        key = value[i:eq]
        if not key or any(c in key for c in ',;="'):
            raise ValueError(f"bad key {key!r}")
        i = eq + 1
        if value[i : i + 1] == '"':
            out = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted value")
                c = value[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise ValueError("dangling escape")
                    out.append(value[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            val = "".join(out)
        else:
            end = i
            while end < n and value[end] not in ",;":
                if value[end] in '="':
                    raise ValueError("unquoted '=' or '\"' in a value")
                end += 1
            val, i = value[i:end], end
        elements[-1].append((key, val))
        if i < n:
            if value[i] == ",":
                elements.append([])
            elif value[i] != ";":
                raise ValueError("garbage after a value")
            i += 1
    return elements


def xfcc(data: bytes) -> None:
    """``data``: a peer certificate (DER) or, when it does not load, a URI SAN (UTF-8)."""
    der = data
    try:
        cert = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion):  # not a certificate: the bytes are a URI SAN
        uri = data.decode("utf-8", "replace")
        try:
            peer: SpiffeId | None = SpiffeId.parse(uri)
        except MeshproxyError:
            peer = None
    else:
        try:
            peer = SpiffeId.from_certificate(cert)
        except (MeshproxyError, ValueError):
            peer = None
    element = format_element(_LOCAL, der, peer)
    try:
        parsed = parse_xfcc(element)
    except ValueError as err:
        raise Finding("xfcc-unparsable", f"{element!r}: {err}") from None
    expected = [
        ("By", str(_LOCAL)),
        ("Hash", parsed[0][1][1] if len(parsed[0]) > 1 else ""),
        ("URI", str(peer) if peer is not None else ""),
    ]
    if parsed != [expected]:
        raise Finding("xfcc-element", f"{element!r} reads back as {parsed!r}")


# ------------------------------------------------------------------ configuration


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def bootstrap(data: bytes) -> None:
    try:
        parse_bootstrap(_text(data), source="fuzz")
    except ConfigError:
        pass


def bootstrap_proto(data: bytes) -> None:
    """A binary Bootstrap: what the text loader hands the compiler, at protobuf's (upb) speed, so
    the compiler's checks get the inputs the text target spends in PyYAML and json_format."""
    msg = bootstrap_pb2.Bootstrap()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        return
    # A nested Any that does not decode cannot come from text (json_format encodes it); over xDS
    # the same compilers run inside resources.compile_resource, which reports it as a problem.
    with contextlib.suppress(ConfigError, DecodeError):
        compile_bootstrap(msg)


def mesh(data: bytes) -> None:
    try:
        parsed, _ = load_mesh(_text(data), source="fuzz")
    except ConfigError:
        return
    translate(parsed)


def mesh_doc(data: bytes) -> None:
    """A mesh document as JSON (JSON is YAML): the validator and translator behind ``load_mesh``
    at the C JSON parser's speed; the YAML text itself is the ``mesh`` target's."""
    text = _text(data)
    try:
        limits.check_json(text)
        doc = json.loads(text)
    except (ConfigError, ValueError):  # not JSON, or nested past the bound
        return
    with contextlib.suppress(ConfigError):
        translate(validate_mesh(doc, source="fuzz"))


_KINDS = (resources.LISTENER, resources.ROUTE, resources.CLUSTER, resources.ENDPOINT)


def xds(data: bytes) -> None:
    """First byte: the resource type; the rest: the serialized resource."""
    if not data:
        return
    type_url = _KINDS[data[0] % 4]
    problems: list[str] = []
    decoded = resources.decode(type_url, AnyProto(type_url=type_url, value=data[1:]), problems, "fuzz")
    if decoded is None:
        return
    name, msg = decoded
    steps = resources.compile_resource(type_url, name, msg, "fuzz", problems)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        if done.value is None and not problems:
            raise Finding("xds-silent", "a resource compiled to nothing without a problem") from None


TARGETS: dict[str, Target] = {
    "http1_request": Target(http1_request, 4096),
    "http1_response": Target(http1_response, 4096),
    "http2_frames": Target(http2_frames, 4096),
    "xfcc": Target(xfcc, 2048),
    "bootstrap": Target(bootstrap, 4096),
    "bootstrap_proto": Target(bootstrap_proto, 4096),
    "mesh": Target(mesh, 4096),
    "mesh_doc": Target(mesh_doc, 4096),
    "xds": Target(xds, 4096),
}
