"""Regular expressions cannot stall the proxy (issue 12, finding 10), end to end.

A ``meshproxy run`` child process serves routes whose path, header and query matchers are
catastrophic-backtracking patterns; clients send them adversarial values of thousands of
characters, and meanwhile another client's requests must be served within a bounded wait.
Under Python's ``re`` the first such request held the event loop for longer than the test
lives (43 characters already took 5 s); under RE2 each is one linear pass. ``meshproxy
validate`` refuses the patterns RE2 refuses, naming the field path.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from .harness import bootstrap, cluster, http_listener, proxy_process
from .upstreams import threaded_upstream

WAIT = 5.0  # seconds any one response may take
N = 4096  # characters of adversarial input

ROUTES_AT = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config"


def _tagged(match: dict[str, Any], tag: str) -> dict[str, Any]:
    return {
        "match": match,
        "route": {"cluster": "backend"},
        "request_headers_to_add": [{"header": {"key": "x-matched", "value": tag}}],
    }


def _regex(pattern: str) -> dict[str, Any]:
    return {"safe_regex": {"regex": pattern}}


ROUTES = [
    _tagged(_regex("/redos/(a+)+"), "path-regex"),
    _tagged(
        {"prefix": "/header", "headers": [{"name": "x-probe", "string_match": _regex("(a|a)*b")}]}, "header"
    ),
    _tagged(
        {"prefix": "/query", "query_parameters": [{"name": "q", "string_match": _regex("(x+x+)+y")}]}, "query"
    ),
    _tagged({"prefix": "/"}, "fallback"),
]

ATTACKS = [  # (path, headers): none of them matches its regex, so each falls through to "/"
    ("/redos/" + "a" * N + "!", {}),
    ("/header", {"x-probe": "a" * N}),
    ("/query?q=" + "x" * N, {}),
]


def _matched(response: http.client.HTTPResponse) -> str:
    assert response.status == 200, response.status
    tags = [value for name, value in json.loads(response.read())["headers"] if name == "x-matched"]
    return tags[0]


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", path, headers=headers or {})
        return _matched(conn.getresponse())
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_redos_inputs_do_not_stall_other_clients(tmp_path: pathlib.Path) -> None:
    with threaded_upstream() as up:
        doc = bootstrap([http_listener(ROUTES)], [cluster("backend", up)])
        with proxy_process(doc, tmp_path) as proxy:
            port = proxy.port()
            attackers = []
            for path, headers in ATTACKS:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
                conn.request("GET", path, headers=headers)  # sent; the answer is read below
                attackers.append(conn)
            try:
                # Another client, served while the adversarial requests are in the proxy.
                assert [_get(port, f"/victim-{i}") for i in range(5)] == ["fallback"] * 5
                assert [_matched(conn.getresponse()) for conn in attackers] == ["fallback"] * len(ATTACKS)
            finally:
                for conn in attackers:
                    conn.close()
            # The same matchers still match what they should.
            assert _get(port, "/redos/" + "a" * N) == "path-regex"
            assert _get(port, "/header", {"x-probe": "a" * N + "b"}) == "header"
            assert _get(port, "/query?q=" + "x" * N + "y") == "query"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(a)\\1", "invalid escape sequence: \\1"), ("(?=a)", "invalid perl operator: (?=")],
)
def test_validate_refuses_what_re2_refuses(tmp_path: pathlib.Path, pattern: str, reason: str) -> None:
    routes = [
        _tagged(_regex(pattern), "path"),
        _tagged({"prefix": "/", "headers": [{"name": "x", "string_match": _regex(pattern)}]}, "header"),
    ]
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap([http_listener(routes)], [cluster("backend", 9)])))
    result = subprocess.run(
        [sys.executable, "-m", "meshproxy", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    route = f"{ROUTES_AT}.virtual_hosts[0].routes"
    assert problems == [
        f'{route}[0].match.safe_regex.regex: "{pattern}" does not compile: {reason}',
        f'{route}[1].match.headers[0].string_match.safe_regex.regex: "{pattern}" does not compile: {reason}',
    ], result.stderr
