"""What the fuzzers found: each finding as a regression test on its minimised input.

Every finding in the codecs is fixed: its minimised reproducer stays in the corpus, which
``test_fuzz.test_corpus_replays`` runs through its target on every test run (a finding there
fails), and the codec's own integration tests name it. A finding that cannot be fixed at once
goes into ``targets.KNOWN_OPEN`` with its reproducers listed here (the consistency test keeps the
two in step), so fuzz runs tolerate it and nothing else. Findings outside the codecs were fixed
with the tests below, which fail on the code before the fix.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
import yaml.scanner
from cryptography import x509
from google.protobuf.any_pb2 import Any as AnyProto

from controlplane.mesh import load_mesh
from meshproxy.config import limits
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.spiffe import SpiffeId, describe_certificate
from meshproxy.xds import resources
from tests.fuzz.targets import _TWO_GETS, KNOWN_OPEN, _the_proxy, http1_request

CORPUS = pathlib.Path(__file__).parent / "corpus"

# Known open finding -> the corpus inputs that reproduce it (target/file).
REPRODUCERS: dict[str, tuple[str, ...]] = {}

# Fixed in the parser (``meshproxy/http/_h1_py.py`` rule 2): every pipelined shape the fuzzer found.
DOUBLE_SPACE = (
    "finding-pipelined-double-space-request-line",
    "finding-pipelined-double-space-request-line-fuzzed",
    "finding-pipelined-double-space-after-target",
    "finding-pipelined-double-space-after-cr",
    "finding-pipelined-double-space-after-body",
)


def test_a_pipelined_request_line_with_two_spaces_is_refused_like_the_first() -> None:
    data = (CORPUS / "http1_request" / DOUBLE_SPACE[0]).read_bytes()
    run = _the_proxy().http1(data)
    assert [m.target for m in run.upstream_requests] == [b"/1"]


@pytest.mark.parametrize("name", DOUBLE_SPACE)
def test_every_double_space_reproducer_frames_as_the_model_does(name: str) -> None:
    """The http1_request target itself: the upstream gets only what the RFC 9112 model frames."""
    http1_request((CORPUS / "http1_request" / name).read_bytes())


def test_early_data_of_a_pipelined_upgrade_never_reaches_another_request_s_connection() -> None:
    """``GET /x``, then ``GET /ws`` with ``Upgrade: websocket``, then ``GET /admin`` in one write:
    the route answers /admin with a direct 403, yet the upstream connection serving /x received
    ``GET /admin`` raw, before the /ws head (the tunnel's early data went to the active request's
    stream, not the upgrade's). Fixed: the bytes after an Upgrade head belong to that request."""
    data = (CORPUS / "http1_request/finding-pipelined-upgrade-early-data").read_bytes()
    run = _the_proxy().http1(data)
    assert all(b"GET /admin" not in upstream.received for upstream in run.upstreams)


def test_every_known_open_finding_has_a_reproducer() -> None:
    assert set(REPRODUCERS) == set(KNOWN_OPEN)
    for paths in REPRODUCERS.values():
        for path in paths:
            assert (CORPUS / path).is_file(), path


# ------------------------------------------------------------------ fixed (outside the codecs)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("services: " + "[" * 10_000 + "]" * 10_000 + "\n", id="deep-flow-lists"),
        pytest.param(
            "services:\n" + "".join(" " * i + "- \n" for i in range(1, 2_000)), id="deep-block-lists"
        ),
    ],
)
def test_mesh_config_nested_too_deep_is_one_clear_refusal(text: str) -> None:
    """The mesh config read 10,000 nested lists into a RecursionError (a traceback, not a message)."""
    with pytest.raises(ConfigError) as raised:
        load_mesh(text, source="mesh.yaml")
    (problem,) = raised.value.problems
    assert problem.startswith("mesh.yaml: line ") and "nested deeper than" in problem


@pytest.mark.timeout(20)
def test_mesh_config_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    with pytest.raises(ConfigError) as raised:
        load_mesh("\n".join(lines) + "\n", source="mesh.yaml")
    (problem,) = raised.value.problems
    assert "expands to more than" in problem and problem.startswith("mesh.yaml: ")


@pytest.mark.parametrize("load", [parse_bootstrap, load_mesh], ids=["bootstrap", "mesh"])
@pytest.mark.parametrize("text", ["a: " + "[" * 10_000, "a: " + "[" * 10_000 + "]" * 10_000])
def test_deep_flow_nesting_is_refused_before_the_scanner_looks_far_ahead(
    load: Callable[..., object], text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the bootstrap and mesh fuzzers (most of their time went there): PyYAML's
    pure-Python scanner looks up to 1,024 characters ahead for a simple key, re-checking every
    open flow level at each token, so ``[[[[…`` cost levels x characters before the nesting
    bound was checked on the events. The scanner now stops at the bound: the tokens it fetched
    are counted (the real scanner, wrapped), about one a level, not a thousand."""
    fetch = yaml.scanner.Scanner.fetch_more_tokens
    fetched = 0

    def counting(scanner: yaml.scanner.Scanner) -> None:
        nonlocal fetched
        fetched += 1
        fetch(scanner)

    monkeypatch.setattr(yaml.scanner.Scanner, "fetch_more_tokens", counting)
    with pytest.raises(ConfigError) as raised:
        load(text, source="deep.yaml")
    assert f"nested deeper than {limits.MAX_DEPTH} levels" in str(raised.value)
    assert 0 < fetched <= 2 * limits.MAX_DEPTH


def test_certificate_with_a_duplicate_extension_is_an_identity_error() -> None:
    """Found by the xfcc fuzzer: x509.DuplicateExtension (not a ValueError) escaped
    SpiffeId.from_certificate, so its callers' ``except (ValueError, MeshproxyError)`` missed it."""
    cert = x509.load_der_x509_certificate((CORPUS / "xfcc/finding-duplicate-extension").read_bytes())
    with pytest.raises(IdentityError, match=r"extension 2\.5\.29\.37 appears twice"):
        SpiffeId.from_certificate(cert)


def test_certificate_with_an_unreadable_subject_still_names_its_spiffe_id() -> None:
    """Found by the xfcc fuzzer: a subject attribute typed BitString under another OID makes
    ``cert.subject`` raise TypeError, which escaped ``SpiffeId.from_certificate`` (it names the
    certificate in its messages) as a traceback."""
    cert = x509.load_der_x509_certificate((CORPUS / "xfcc/finding-subject-bitstring-type").read_bytes())
    with pytest.raises(TypeError):
        _ = cert.subject
    assert "<unreadable subject>" in describe_certificate(cert)
    assert str(SpiffeId.from_certificate(cert)) == "spiffe://cluster.local"


def test_an_interim_response_with_a_body_is_a_502_not_relayed_headless() -> None:
    """Found by the http1_response fuzzer: a 1xx response with Transfer-Encoding (RFC 9110 §8.6,
    RFC 9112 §6.1: never on a 1xx) had llhttp read a body for it, which the proxy relayed to the
    client with no status line: the client read the upstream's bytes as the next response."""
    data = b"HTTP/1.1 199 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    run = _the_proxy().http1(_TWO_GETS, [data])
    first, _, rest = run.downstream.partition(b"\r\n")
    assert first == b"HTTP/1.1 502 Bad Gateway", run.downstream[:200]
    assert b"interim 199 response with Content-Length or Transfer-Encoding" in rest
    assert rest.endswith(b"\r\n\r\nok"), "the pipelined second request still gets its own answer"


def test_a_204_response_chunked_upstream_ends_at_its_head() -> None:
    """Found by the http1_response fuzzer: a 204 whose upstream said ``Transfer-Encoding:
    chunked`` reached the client followed by a last chunk, ``0\\r\\n\\r\\n``, which the client
    read as the start of the next response."""
    run = _the_proxy().http1(_TWO_GETS, [(CORPUS / "http1_response/finding-204-chunked").read_bytes()])
    first, _, rest = run.downstream.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204 No Content"), run.downstream[:200]
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nok"), rest[:200]


@pytest.mark.parametrize("host", [b"[", b"a]", b"[::1", b"a:b:c", b"a:8x", b"[v1.x]"])
def test_a_host_that_is_no_authority_is_refused_not_forwarded(host: bytes) -> None:
    """Found by the http1_request fuzzer: the Host check was a character set only, so ``[``,
    ``a:b:c`` and ``a:8x`` reached the upstream (RFC 9112 §3.2: a 400 for an invalid Host)."""
    run = _the_proxy().http1(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert run.downstream.startswith(b"HTTP/1.1 400 "), run.downstream[:100]
    assert not run.upstreams


def test_a_content_length_over_18_digits_is_refused_not_forwarded() -> None:
    """Found by the http1_request fuzzer: ``Content-Length: 00000015908979783594147838`` (past
    2^63, under llhttp's 2^64) was forwarded as it came, for a next hop that may hold it signed."""
    data = (CORPUS / "http1_request/finding-content-length-26-digits").read_bytes()
    run = _the_proxy().http1(data)
    assert run.downstream.startswith(b"HTTP/1.1 400 "), run.downstream[:100]
    assert not run.upstreams
    ok = _the_proxy().http1(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000000000000000002\r\n\r\nhi")
    assert ok.upstream_requests[0].body == b"hi"


def test_an_ip_literal_host_with_a_port_is_forwarded() -> None:
    run = _the_proxy().http1(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
    assert run.downstream.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nhost: [::1]:8080\r\n" in run.upstreams[0].received


@pytest.mark.parametrize(
    "codings",
    [b"gzip\r\nTransfer-Encoding: chunked", b"gzip, chunked", b"chunked\r\nTransfer-Encoding: chunked"],
)
def test_a_response_transfer_coding_other_than_chunked_is_a_502(codings: bytes) -> None:
    """Found by the http1_response fuzzer: an unknown coding before ``chunked`` was accepted, the
    body de-chunked and relayed with the other coding still applied and no longer declared."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + codings + b"\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    run = _the_proxy().http1(_TWO_GETS, [data])
    assert run.downstream.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), run.downstream[:100]
    assert b"a transfer coding other than chunked" in run.downstream


def test_transfer_encoding_in_an_http10_response_is_a_502() -> None:
    """Found by the http1_response fuzzer: an HTTP/1.0 response with ``Transfer-Encoding:
    chunked`` was de-chunked and relayed; RFC 9112 §6.1 calls its framing faulty."""
    data = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    run = _the_proxy().http1(_TWO_GETS, [data])
    assert run.downstream.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), run.downstream[:100]
    assert b"Transfer-Encoding in an HTTP/1.0 response" in run.downstream


def test_a_response_that_is_not_http_1x_is_a_502() -> None:
    """Found by the http1_response fuzzer: ``HTTP/2.0 200 OK`` from an HTTP/1.1 upstream was relayed."""
    run = _the_proxy().http1(_TWO_GETS, [b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert run.downstream.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), run.downstream[:100]
    assert b"HTTP/2.0 is not an HTTP/1.x response" in run.downstream


def test_xds_resource_with_an_undecodable_nested_any_is_a_problem() -> None:
    """Found by the xds fuzzer: a Listener whose filter chain's DownstreamTlsContext holds bad
    UTF-8 raised DecodeError out of compile_resource instead of reporting a problem (a NACK)."""
    data = (CORPUS / "xds/finding-nested-any-bad-utf8").read_bytes()
    problems: list[str] = []
    decoded = resources.decode(
        resources.LISTENER, AnyProto(type_url=resources.LISTENER, value=data[1:]), problems, "fuzz"
    )
    assert decoded is not None and data[0] % 4 == 0
    steps = resources.compile_resource(resources.LISTENER, *decoded, "fuzz", problems)
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
    assert done.value.value is None
    assert any("does not decode" in p and "DownstreamTlsContext" in p for p in problems), problems


def test_xds_tls_filename_with_a_nul_byte_is_a_problem() -> None:
    """Found by the xds fuzzer: a DataSource filename holding NUL raised ValueError out of the
    TLS compiler (open() refuses such names) instead of reporting a problem."""
    data = (CORPUS / "xds/finding-filename-nul").read_bytes()
    problems: list[str] = []
    decoded = resources.decode(
        resources.LISTENER, AnyProto(type_url=resources.LISTENER, value=data[1:]), problems, "fuzz"
    )
    assert decoded is not None
    steps = resources.compile_resource(resources.LISTENER, *decoded, "fuzz", problems)
    with pytest.raises(StopIteration):
        while True:
            next(steps)
    assert any("holds a NUL byte" in p for p in problems), problems
