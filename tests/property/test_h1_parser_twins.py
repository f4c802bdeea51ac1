"""The compiled HTTP/1.1 parsers and their twins report identical events for any bytes.

Issue 14's differential property: the same byte stream, split at random points, fed to
``_h1_c`` and to ``_h1_py``, gives the same heads, bodies, completions, tunnel bytes and
refusals (status and body), and the same as the stream fed whole. Inputs are the
``http1_request`` and ``http1_response`` fuzz corpora (every finding and seed), those inputs
mutated byte-wise, and requests assembled from fragments that each rule of the parser cares
about. The corpus replay over the compiled parsers is the bounded fuzz run of the suite.
"""

from __future__ import annotations

import pathlib
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twins import import_twin

from tests.unit.http.test_request_parser import parse
from tests.unit.http.test_response_parser import parse_response

CORPUS = pathlib.Path(__file__).parents[1] / "fuzz" / "corpus"
SEEDS = [path.read_bytes() for path in sorted((CORPUS / "http1_request").iterdir())]
RESPONSES = [path.read_bytes() for path in sorted((CORPUS / "http1_response").iterdir())]

FRAGMENTS = [
    b"GET / HTTP/1.1\r\n",
    b"POST /p?q HTTP/1.0\r\n",
    b"GET  / HTTP/1.1\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n",
    b"Host: a\r\n",
    b"Host: [::1]:8\r\n",
    b"host: a b\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 1x\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close, upgrade, x-a\r\n",
    b"Connection: keep-alive\r\n",
    b"Upgrade: websocket\r\n",
    b"Upgrade: h2c\r\n",
    b"Expect: 100-continue\r\n",
    b"X-A: 1\r\n",
    b"X_B: 2\r\n",
    b" folded\r\n",
    b"X-Forwarded-For: 1.2.3.4\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"abc",
    b"3\r\nabc\r\n",
    b'3;e="q"\r\nabc\r\n',
    b"0\r\n\r\n",
    b"0\r\nX-T: 1\r\n\r\n",
    b"\x00",
    b"#",
    b" ",
]


@pytest.fixture(scope="module")
def twins() -> tuple[ModuleType, ModuleType]:
    return import_twin("meshproxy.http._h1", "c"), import_twin("meshproxy.http._h1", "py")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def assert_agree(twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], limit: int) -> None:
    compiled, twin = twins
    whole = parse(twin, [data], limit=limit, fields=12)
    pieces = split(data, cuts)
    assert parse(compiled, [data], limit=limit, fields=12) == whole
    assert parse(compiled, pieces, limit=limit, fields=12) == whole
    assert parse(twin, pieces, limit=limit, fields=12) == whole


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    edit = st.tuples(
        st.integers(0, max(len(seed), 1)), st.sampled_from(["set", "insert", "delete"]), st.binary(max_size=3)
    )

    def apply(edits: list[tuple[int, str, bytes]]) -> bytes:
        data = bytearray(seed)
        for pos, kind, piece in edits:
            pos = min(pos, len(data))
            if kind == "delete":
                del data[pos : pos + len(piece) + 1]
            elif kind == "insert":
                data[pos:pos] = piece
            else:
                data[pos : pos + len(piece)] = piece
        return bytes(data)

    return st.lists(edit, max_size=4).map(apply)


INPUTS = st.one_of(
    st.sampled_from(SEEDS).flatmap(mutated),
    st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(b"".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=INPUTS, cuts=st.lists(st.integers(0, 1 << 16), max_size=6), limit=st.sampled_from([64, 4096]))
def test_compiled_and_twin_agree_on_any_split(
    twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], limit: int
) -> None:
    assert_agree(twins, data, cuts, limit)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_corpus_input_agrees_split_anywhere(twins: tuple[ModuleType, ModuleType], index: int) -> None:
    """The bounded corpus run over the compiled parser: each input whole, halved, in thirds."""
    data = SEEDS[index]
    for cuts in ([], [len(data) // 2], [len(data) // 3, 2 * len(data) // 3], list(range(0, len(data), 7))):
        assert_agree(twins, data, cuts, 60 * 1024)


def assert_responses_agree(
    twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], limit: int, head_request: bool
) -> None:
    compiled, twin = twins
    options = {"limit": limit, "fields": 12, "head_request": head_request}
    whole = parse_response(twin, [data], **options)
    pieces = split(data, cuts)
    assert parse_response(compiled, [data], **options) == whole
    assert parse_response(compiled, pieces, **options) == whole
    assert parse_response(twin, pieces, **options) == whole


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.sampled_from(RESPONSES).flatmap(mutated),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
    limit=st.sampled_from([64, 4096]),
    head_request=st.booleans(),
)
def test_response_twins_agree_on_any_split(
    twins: tuple[ModuleType, ModuleType], data: bytes, cuts: list[int], limit: int, head_request: bool
) -> None:
    assert_responses_agree(twins, data, cuts, limit, head_request)


@pytest.mark.parametrize("index", range(len(RESPONSES)))
def test_every_response_corpus_input_agrees_split_anywhere(
    twins: tuple[ModuleType, ModuleType], index: int
) -> None:
    data = RESPONSES[index]
    for cuts in ([], [len(data) // 2], list(range(0, len(data), 5))):
        assert_responses_agree(twins, data, cuts, 60 * 1024, False)
