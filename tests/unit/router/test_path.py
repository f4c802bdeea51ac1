"""router/path.py: normalize_path, merge_slashes and the escaped-slash actions, as Envoy applies
them before routing; and their compilation from the HttpConnectionManager proto."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote_to_bytes

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from meshproxy.config.compile import compile_listener
from meshproxy.config.model import NO_PATH_POLICY, HttpConnectionManager, PathPolicy
from meshproxy.router.path import Outcome, canonical_path, normalize, remove_dot_segments

NORMAL = PathPolicy(normalize=True)
MESH = PathPolicy(normalize=True, merge_slashes=True)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/x/../admin", b"/admin"),
        (b"/a/../internal/x", b"/internal/x"),
        (b"/%61dmin", b"/admin"),
        (b"/./admin", b"/admin"),
        (b"/admin/.", b"/admin/"),
        (b"/admin/sub/..", b"/admin/"),
        (b"/../../admin", b"/admin"),
        (b"/%2e%2e/admin", b"/admin"),
        (b"/%2E/admin", b"/admin"),
        (b"/x\\..\\admin", b"/admin"),
        (b"/a%2fb", b"/a%2Fb"),  # an escaped slash stays escaped: it is data, not a separator
        (b"/caf%c3%a9", b"/caf%C3%A9"),
        (b"/a b", b"/a%20b"),
        (b"/admin?x=/../y", b"/admin?x=/../y"),  # the query is never touched
        (b"/plain/path?q=1", b"/plain/path?q=1"),
        (b"/a..b/.c", b"/a..b/.c"),
    ],
)
def test_normalize_path(target: bytes, expected: bytes) -> None:
    assert normalize(target, NORMAL) == (Outcome.FORWARD, expected)


@pytest.mark.parametrize("target", [b"/%", b"/%4", b"/%zz", b"/a%g1", b"/%%41"])
def test_malformed_percent_encoding_is_refused(target: bytes) -> None:
    assert normalize(target, NORMAL)[0] is Outcome.REJECT
    assert normalize(target, NO_PATH_POLICY) == (Outcome.FORWARD, target)


def test_merge_slashes_alone_and_after_normalisation() -> None:
    assert normalize(b"//admin///x?a=//b", PathPolicy(merge_slashes=True)) == (
        Outcome.FORWARD,
        b"/admin/x?a=//b",
    )
    assert normalize(b"//x/..//admin", MESH) == (Outcome.FORWARD, b"/admin")
    # Without merge_slashes "//admin" is a different path (an empty first segment).
    assert normalize(b"//admin", NORMAL) == (Outcome.FORWARD, b"//admin")


@pytest.mark.parametrize("escape", [b"%2F", b"%2f", b"%5C", b"%5c"])
def test_escaped_slash_actions(escape: bytes) -> None:
    target = b"/x" + escape + b"..%2Fadmin?q"
    assert normalize(target, PathPolicy(escaped_slashes="KEEP_UNCHANGED")) == (Outcome.FORWARD, target)
    assert normalize(target, PathPolicy(escaped_slashes="REJECT_REQUEST"))[0] is Outcome.REJECT
    forward = PathPolicy(normalize=True, escaped_slashes="UNESCAPE_AND_FORWARD")
    assert normalize(target, forward) == (Outcome.FORWARD, b"/admin?q")
    redirect = PathPolicy(normalize=True, escaped_slashes="UNESCAPE_AND_REDIRECT")
    assert normalize(target, redirect) == (Outcome.REDIRECT, b"/admin?q")
    # No escaped slash: nothing to redirect to.
    assert normalize(b"/plain", redirect) == (Outcome.FORWARD, b"/plain")


def _reference(path: bytes) -> bytes:
    """An independent model: decode everything but "/" and "%", resolve dots with posixpath."""
    decoded = unquote_to_bytes(path.replace(b"%2F", b"%252F").replace(b"%2f", b"%252f"))
    resolved = posixpath.normpath(decoded.decode("latin-1"))
    resolved = "/" + resolved.lstrip("/") if resolved.startswith("//") else resolved
    trailing = path.endswith((b"/", b"/.", b"/..")) and resolved != "/"
    return (resolved + ("/" if trailing else "")).encode("latin-1")


_SEGMENT = st.sampled_from(["a", "b", ".", "..", "%2e", "%2E%2e", "%61", "x.y", "~"])


@given(st.lists(_SEGMENT, min_size=1, max_size=8), st.booleans())
def test_canonical_path_agrees_with_a_reference_model(segments: list[str], trailing: bool) -> None:
    path = ("/" + "/".join(segments) + ("/" if trailing else "")).encode()
    canonical = canonical_path(path)
    assert canonical is not None
    # No dot segment survives, and the path stays absolute.
    assert canonical.startswith(b"/")
    assert b"/./" not in canonical + b"/" and b"/../" not in canonical + b"/"
    expected = _reference(path)
    assert canonical.rstrip(b"/") == expected.rstrip(b"/") or (canonical, expected) == (b"/", b"/")
    # Normalising twice changes nothing (RFC 3986 §6: a canonical form is a fixed point).
    assert canonical_path(canonical) == canonical


def test_remove_dot_segments_rfc_examples() -> None:
    # RFC 3986 §5.2.4's worked examples, as absolute paths.
    assert remove_dot_segments(b"/a/b/c/./../../g") == b"/a/g"
    assert remove_dot_segments(b"/mid/content=5/../6") == b"/mid/6"


def _compile(**hcm_fields: object) -> tuple[HttpConnectionManager | None, list[str]]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "in",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": []}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
        **hcm_fields,
    }
    doc = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 80}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    problems: list[str] = []
    result = compile_listener(json_format.ParseDict(doc, listener_pb2.Listener()), "l", problems)
    terminal = result.filter_chains[0].filter if result is not None else None
    assert terminal is None or isinstance(terminal, HttpConnectionManager)
    return terminal, problems


def test_hcm_options_compile() -> None:
    plain, problems = _compile()
    assert plain is not None and plain.path is NO_PATH_POLICY, problems
    options, problems = _compile(
        normalize_path=True, merge_slashes=True, path_with_escaped_slashes_action="UNESCAPE_AND_REDIRECT"
    )
    assert options is not None, problems
    assert options.path == PathPolicy(True, True, "UNESCAPE_AND_REDIRECT")


def test_path_normalization_options_is_refused_with_its_path() -> None:
    result, problems = _compile(path_normalization_options={})
    assert result is None
    assert any("path_normalization_options: is not supported" in p for p in problems), problems
