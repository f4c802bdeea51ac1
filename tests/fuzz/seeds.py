"""``python -m tests.fuzz.seeds``: (re)writes the seed inputs of ``tests/fuzz/corpus/<target>/``.

Owns the seeds: every finding of issue 12 in the shape each parser sees it (the smuggling suite's
request shapes, path-normalisation bypasses, the h2c upgrade, the ReDoS path, header floods, the
response-side abuses, rapid reset and HPACK amplification frames, the YAML alias bomb and deep
nesting), plus one ordinary input per feature so the fuzzer starts from real coverage. Seed files
are named ``seed-<name>``; inputs the fuzzers found and minimised are kept beside them under their
SHA-1 names. ``python -m tests.fuzz.seeds [target...]`` rewrites the named targets' seeds only.
Deterministic but for the certificates (``xfcc``, and the TLS contexts of ``xds``): fresh keys.
"""

from __future__ import annotations

import json
import pathlib
import string
import sys
from importlib import resources

import h2.config
import h2.connection
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from controlplane.mesh import default_mesh_text, load_mesh, translate
from tests.certs import make_ca, make_leaf
from tests.fuzz.inproc import _bootstrap
from tests.fuzz.targets import _KINDS
from tests.integration.test_smuggling import SHAPES
from tests.unit.config.test_bootstrap_limits import billion_laughs

CORPUS = pathlib.Path(__file__).parent / "corpus"


def _req(*lines: str, body: bytes = b"") -> bytes:
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def http1_request() -> dict[str, bytes]:
    seeds = {f"smuggling-{name}": data for name, data in SHAPES}
    host = "Host: a"
    for path in ("/x/../admin", "//admin", "/admin;x", "/%61dmin", "/a/../internal/x", "/admin%2fx"):
        seeds[f"path-{path.strip('/').replace('/', '_')}"] = _req(f"GET {path} HTTP/1.1", host)
    seeds["redos-path"] = _req("GET /redos/" + "a" * 27 + "! HTTP/1.1", host)
    seeds["slowloris-partial-head"] = b"GET / HTTP/1.1\r\nHost: a\r\nX-a: b"
    seeds["header-count-101"] = _req("GET / HTTP/1.1", host, *[f"x-h{i}: v" for i in range(101)])
    seeds["trailer-large"] = _req(
        "POST / HTTP/1.1",
        host,
        "Transfer-Encoding: chunked",
        body=b"1\r\nx\r\n0\r\nx-t: " + b"t" * 2000 + b"\r\n\r\n",
    )
    seeds["underscore-header"] = _req("GET / HTTP/1.1", host, "x_forwarded_for: 1.2.3.4")
    seeds["slow-post"] = _req("POST / HTTP/1.1", host, "Content-Length: 1000", body=b"x")
    seeds["websocket-upgrade"] = _req(
        "GET /ws HTTP/1.1",
        host,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    seeds["pipeline-three"] = (
        _req("GET /1 HTTP/1.1", host)
        + _req("POST /2 HTTP/1.1", host, "Content-Length: 2", body=b"ab")
        + _req("GET /3 HTTP/1.0")
    )
    seeds["expect-continue-get"] = _req("GET / HTTP/1.1", host, "Expect: 100-continue")
    return seeds


def _resp(*lines: str, body: bytes = b"") -> bytes:
    return _req(*lines, body=body)


def http1_response() -> dict[str, bytes]:
    ok = "HTTP/1.1 200 OK"
    return {
        "content-length": _resp(ok, "Content-Length: 5", body=b"hello"),
        "chunked": _resp(ok, "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"),
        "close-delimited": _resp(ok, "Connection: close", body=b"hello"),
        "no-content": _resp("HTTP/1.1 204 No Content"),
        "interim-then-final": _resp("HTTP/1.1 100 Continue")
        + _resp("HTTP/1.1 103 Early Hints", "Link: </a>")
        + _resp(ok, "Content-Length: 2", body=b"ok"),
        "connection-content-length": _resp(
            ok,
            "Content-Length: 5",
            "Connection: content-length",
            body=b"helloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON",
        ),
        "unsolicited-101": _resp(
            "HTTP/1.1 101 Switching Protocols", "Upgrade: x", "Connection: upgrade", body=b"RAW"
        ),
        "status-999": _resp("HTTP/1.1 999 Weird", "Content-Length: 0"),
        "extra-bytes-after": _resp(
            ok, "Content-Length: 2", body=b"okHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"
        ),
        "cl-and-te": _resp(
            ok, "Content-Length: 3", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"
        ),
        "two-content-lengths": _resp(ok, "Content-Length: 2", "Content-Length: 5", body=b"hello"),
        "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        "long-header": _resp(ok, "x-big: " + "b" * 3000, "Content-Length: 0"),
        "header-count-101": _resp(ok, *[f"x-h{i}: v" for i in range(101)], "Content-Length: 0"),
        "obs-fold": _resp(ok, "x-a: b", " folded", "Content-Length: 0"),
        "http10-response": _resp("HTTP/1.0 200 OK", body=b"until close"),
    }


def _h2(build: object) -> bytes:
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        header_encoding=None,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    build(conn)  # type: ignore[operator]
    return conn.data_to_send()[24:]  # inproc sends the client preface itself


_GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


def http2_frames() -> dict[str, bytes]:
    def get(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, _GET, end_stream=True)

    def post(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [(b":method", b"POST"), *_GET[1:], (b"content-length", b"5")])
        conn.send_data(1, b"hello", end_stream=True)

    def rapid_reset(conn: h2.connection.H2Connection) -> None:
        for sid in range(1, 41, 2):
            conn.send_headers(sid, _GET, end_stream=True)
            conn.reset_stream(sid)

    def hpack_amplification(conn: h2.connection.H2Connection) -> None:
        big = [(b"x-big", b"v" * 3000)]
        conn.send_headers(1, _GET + big, end_stream=True)
        conn.send_headers(3, _GET + big * 60, end_stream=True)

    def bad_method(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [(b":method", b"GET /x HTTP/1.1\r\nHost: b"), *_GET[1:]], end_stream=True)

    def bad_path(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [*_GET[:3], (b":path", b"/a b HTTP/1.1")], end_stream=True)

    def bad_name(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [*_GET, (b"x(y)", b"1")], end_stream=True)

    def extended_connect(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *_GET[1:]])

    def trailers(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [(b":method", b"POST"), *_GET[1:]])
        conn.send_data(1, b"x")
        conn.send_headers(1, [(b"x-t", b"1")], end_stream=True)

    def ctl_in_value(conn: h2.connection.H2Connection) -> None:  # found by the fuzzer
        conn.send_headers(1, [*_GET, (b"x-a", b"a\x1db")], end_stream=True)

    def ctl_in_trailer(conn: h2.connection.H2Connection) -> None:
        conn.send_headers(1, [(b":method", b"POST"), *_GET[1:]])
        conn.send_data(1, b"x")
        conn.send_headers(1, [(b"x-t", b"\x7f")], end_stream=True)

    builds = {
        "get": get,
        "post": post,
        "rapid-reset": rapid_reset,
        "hpack-amplification": hpack_amplification,
        "method-with-request-line": bad_method,
        "path-with-space": bad_path,
        "name-with-parens": bad_name,
        "extended-connect": extended_connect,
        "trailers": trailers,
        "ctl-in-value": ctl_in_value,
        "ctl-in-trailer": ctl_in_trailer,
    }
    seeds = {name: _h2(build) for name, build in builds.items()}
    # CONTINUATION and SETTINGS floods, by hand: type 9 with no END_HEADERS, then 4 (SETTINGS).
    continuation = b"\x00\x00\x00\x09\x00\x00\x00\x00\x01"
    headers = b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x82"[:3] + b"\x01\x00\x00\x00\x00\x01\x82"
    seeds["continuation-flood"] = headers + continuation * 50
    seeds["settings-flood"] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" * 50
    return seeds


def xfcc() -> dict[str, bytes]:
    odd = make_leaf(uri_sans=['spiffe://td/x;URI="spiffe://td/admin"'])
    return {
        "svid-der": make_leaf().cert.public_bytes(Encoding.DER),
        "odd-uri-der": odd.cert.public_bytes(Encoding.DER),
        "ca-der": make_ca().ca.cert.public_bytes(Encoding.DER),
        "uri-plain": b"spiffe://td/ns/a/sa/b",
        "uri-specials": b'spiffe://td/a,b;c="d\\e',
        "uri-injection": b"spiffe://td/x;URI=spiffe://td/admin",
        "uri-upper-scheme": b"SPIFFE://td/x",
    }


def _yaml_deep(depth: int) -> str:
    return "a: " + "[" * depth + "]" * depth + "\n"


def bootstrap() -> dict[str, bytes]:
    return {
        "fuzz-bootstrap-json": _bootstrap().encode(),
        "sidecar": _sidecar_bootstrap().encode(),
        "alias-bomb": billion_laughs().encode(),
        "deep-list": _yaml_deep(60).encode(),
        "deep-json": ('{"node": ' + '{"a":' * 60 + "1" + "}" * 61).encode(),
    }


def _sidecar_bootstrap() -> str:
    """The demo's sidecar bootstrap (ADS over gRPC, an admin port), its placeholders filled."""
    template = string.Template(resources.files("controlplane.demo").joinpath("sidecar.yaml").read_text())
    values = {"node_id": "web-sidecar", "group": "web", "admin_port": 15000, "api_type": "GRPC"}
    return template.substitute(values, xds_host="127.0.0.1", xds_port=15010)


def bootstrap_proto() -> dict[str, bytes]:
    seeds = {}
    for name, text in (("fuzz-bootstrap", _bootstrap()), ("sidecar", _sidecar_bootstrap())):
        msg = bootstrap_pb2.Bootstrap()
        json_format.ParseDict(yaml.safe_load(text), msg)
        seeds[name] = msg.SerializeToString(deterministic=True)
    return seeds


def mesh_doc() -> dict[str, bytes]:
    _, doc = load_mesh(default_mesh_text())
    return {"default": json.dumps(doc).encode(), "deep-json": ('{"a": ' + "[" * 60 + "]" * 60 + "}").encode()}


def mesh() -> dict[str, bytes]:
    return {
        "default": default_mesh_text().encode(),
        "alias-bomb": billion_laughs().encode(),
        "deep-list": _yaml_deep(60).encode(),
        "deep-map": ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 60))).encode(),
    }


def xds() -> dict[str, bytes]:
    mesh_, _ = load_mesh(default_mesh_text())
    seeds = {}
    for group, found in translate(mesh_).items():
        for type_url, named in found.items():
            for name, message in sorted(named.items())[:3]:
                tag = bytes([_KINDS.index(type_url)])
                seeds[f"{group}-{type_url.rsplit('.', 1)[1]}-{name}"] = tag + message.SerializeToString()
    return seeds


def main(only: list[str]) -> None:
    """Writes every target's seeds, or those of the targets named in ``only``."""
    for target, make in (
        ("http1_request", http1_request),
        ("http1_response", http1_response),
        ("http2_frames", http2_frames),
        ("xfcc", xfcc),
        ("bootstrap", bootstrap),
        ("bootstrap_proto", bootstrap_proto),
        ("mesh", mesh),
        ("mesh_doc", mesh_doc),
        ("xds", xds),
    ):
        if only and target not in only:
            continue
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in make().items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
            (folder / f"seed-{safe}").write_bytes(data)
        print(f"{target}: {len(list(folder.glob('seed-*')))} seeds")


if __name__ == "__main__":
    main(sys.argv[1:])
