"""compile_route_configuration: route actions (timeouts, rewrites, weighted clusters, redirects,
direct responses), header mutations at every level, and route names."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from route_docs import (
    FORWARD,
    compiled,
    only_route,
    route,
    route_config,
)

from meshproxy.config.model import (
    DirectResponse,
    HeaderValueOption,
    Redirect,
    RouteAction,
)


@pytest.mark.parametrize(("timeout", "expected"), [(None, 15.0), ("0s", 0.0), ("2.5s", 2.5)])
def test_route_timeout(timeout: str | None, expected: float) -> None:
    action = FORWARD if timeout is None else FORWARD | {"timeout": timeout}
    compiled_action = only_route(route_config(route(route=action))).action
    assert isinstance(compiled_action, RouteAction)
    assert compiled_action.timeout == expected


def test_route_action_rewrites_and_weighted_clusters() -> None:
    action = {
        "weighted_clusters": {
            "clusters": [
                {"name": "a", "weight": 0},
                {
                    "name": "b",
                    "weight": 5,
                    "request_headers_to_add": [{"header": {"key": "X-B", "value": "1"}}],
                    "response_headers_to_remove": ["X-Internal"],
                },
            ],
            "total_weight": 5,
        },
        "regex_rewrite": {"pattern": {"regex": "^/(\\w+)/(\\w+)$"}, "substitution": "/\\2/\\1/\\0"},
        "host_rewrite_literal": "b.internal",
    }
    compiled_action = only_route(route_config(route(route=action))).action
    assert isinstance(compiled_action, RouteAction)
    assert [(w.name, w.weight) for w in compiled_action.weighted_clusters] == [("a", 0), ("b", 5)]
    assert compiled_action.total_weight == 5
    b = compiled_action.weighted_clusters[1]
    assert b.request_headers.to_add == (HeaderValueOption("x-b", "1"),)
    assert b.response_headers.to_remove == ("x-internal",)
    assert compiled_action.host_rewrite_literal == "b.internal"
    assert compiled_action.regex_rewrite is not None
    rewrite = compiled_action.regex_rewrite
    assert rewrite.pattern.replace(rewrite.rewrite, b"/x/y") == b"/y/x//x/y"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (None, 301),
        ("MOVED_PERMANENTLY", 301),
        ("FOUND", 302),
        ("SEE_OTHER", 303),
        ("TEMPORARY_REDIRECT", 307),
        ("PERMANENT_REDIRECT", 308),
    ],
)
def test_redirect_response_codes(code: str | None, expected: int) -> None:
    redirect = {} if code is None else {"response_code": code}
    compiled_action = only_route(route_config(route(redirect=redirect))).action
    assert compiled_action == Redirect(response_code=expected)


def test_redirect_fields() -> None:
    redirect = {
        "scheme_redirect": "HTTPS",
        "host_redirect": "new.example",
        "port_redirect": 8443,
        "regex_rewrite": {"pattern": {"regex": "^/old/(.*)"}, "substitution": "/new/\\1"},
        "strip_query": True,
    }
    compiled_action = only_route(route_config(route(redirect=redirect))).action
    assert isinstance(compiled_action, Redirect)
    assert (compiled_action.scheme, compiled_action.host, compiled_action.port) == (
        "https",
        "new.example",
        8443,
    )
    assert compiled_action.strip_query is True
    assert compiled_action.regex_rewrite is not None
    rewrite = compiled_action.regex_rewrite
    assert rewrite.pattern.replace(rewrite.rewrite, b"/old/a") == b"/new/a"
    https = only_route(route_config(route(redirect={"https_redirect": True, "path_redirect": "/p"}))).action
    assert https == Redirect(scheme="https", path="/p")


@pytest.mark.parametrize(
    ("body", "expected"),
    [(None, b""), ({"inline_string": "héllo"}, "héllo".encode()), ({"inline_bytes": "AAE="}, b"\x00\x01")],
)
def test_direct_response_body(body: dict[str, Any] | None, expected: bytes) -> None:
    response = {"status": 503} | ({} if body is None else {"body": body})
    assert only_route(route_config(route(direct_response=response))).action == DirectResponse(503, expected)


def test_header_mutations_at_every_level() -> None:
    add = [
        {"header": {"key": "X-Add", "value": "1"}},
        {"header": {"key": "x-raw", "raw_value": "dg=="}, "append_action": "OVERWRITE_IF_EXISTS"},
        {"header": {"key": "x-old", "value": "o"}, "append": False},
    ]
    doc = route_config(
        route(route=FORWARD, response_headers_to_add=add[:1], request_headers_to_remove=["X-Route"]),
        request_headers_to_add=add,
    )
    doc["virtual_hosts"][0]["response_headers_to_remove"] = ["X-VHost"]
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    assert result.request_headers.to_add == (
        HeaderValueOption("x-add", "1"),
        HeaderValueOption("x-raw", "v", "overwrite_if_exists"),
        HeaderValueOption("x-old", "o", "overwrite_if_exists_or_add"),
    )
    assert result.response_headers.empty
    assert result.virtual_hosts[0].response_headers.to_remove == ("x-vhost",)
    compiled_route = result.virtual_hosts[0].routes[0]
    assert compiled_route.response_headers.to_add == (HeaderValueOption("x-add", "1"),)
    assert compiled_route.request_headers.to_remove == ("x-route",)


def test_route_name_and_cluster_references_are_recorded_not_checked() -> None:
    """Whether a cluster exists is the caller's question (the bootstrap compiler's, or xDS's)."""
    compiled_route = only_route(
        route_config({"name": "r1", "match": {"prefix": "/"}, "route": {"cluster": "nowhere"}})
    )
    assert compiled_route.name == "r1"
    assert compiled_route.action == RouteAction(cluster="nowhere")


def _re2_rewrite(match: re.Match[str], rewrite: str) -> str:
    """A reference implementation of RE2::Rewrite: \\0-\\9 name groups, \\\\ is a backslash."""
    out, i = [], 0
    while i < len(rewrite):
        if rewrite[i] == "\\":
            nxt = rewrite[i + 1]
            out.append("\\" if nxt == "\\" else match.group(int(nxt)) or "")
            i += 2
        else:
            out.append(rewrite[i])
            i += 1
    return "".join(out)


@given(
    pieces=st.lists(
        st.sampled_from(["\\0", "\\1", "\\2", "\\\\", "a", "/", "1", "2", "g<1>", "$1"]), max_size=8
    ),
    subject=st.text(alphabet="ab/", max_size=12),
)
def test_regex_rewrite_substitution_follows_re2(pieces: list[str], subject: str) -> None:
    """RE2's \\0 (whole match) and one-digit group references, checked against a reference rewrite."""
    substitution = "".join(pieces)
    action = {
        "cluster": "a",
        "regex_rewrite": {"pattern": {"regex": "(a+)(b*)"}, "substitution": substitution},
    }
    compiled_action = only_route(route_config(route(route=action))).action
    assert isinstance(compiled_action, RouteAction)
    assert compiled_action.regex_rewrite is not None
    rewrite = compiled_action.regex_rewrite
    expected = re.sub("(a+)(b*)", lambda m: _re2_rewrite(m, substitution), subject)
    assert rewrite.pattern.replace(rewrite.rewrite, subject.encode()) == expected.encode()
