"""Reading bootstrap text: YAML and JSON syntax, duplicate keys, empty files, protobuf parse errors."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap
from meshproxy.errors import ConfigError


def problems_of(text: str, source: str = "boot.yaml") -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(text, source=source)
    return raised.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "node:\n  id: a\nstatic_resources: [1, 2\nadmin: {}\n",
            "boot.yaml:4:6: YAML error: expected ',' or ']', but got ':' (while parsing a flow sequence)",
            id="yaml-syntax",
        ),
        pytest.param(
            "node:\n\tid: a\n",
            "boot.yaml:2:1: YAML error: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
            id="yaml-tab",
        ),
        pytest.param(
            "node: {id: a}\nadmin: {}\nnode: {id: b}\n",
            "boot.yaml:3:1: YAML error: duplicate key 'node' (first on line 1)",
            id="yaml-duplicate-key",
        ),
        pytest.param(
            '{\n  "node": {"id": "a",}\n}',
            "boot.yaml:2:22: JSON syntax error: Expecting property name enclosed in double quotes",
            id="json-syntax",
        ),
        pytest.param(
            '{"node": {}, "node": {}}',
            'boot.yaml: JSON syntax error: duplicate key "node"',
            id="json-duplicate-key",
        ),
        pytest.param("", "boot.yaml: the bootstrap is empty", id="empty"),
        pytest.param("  \n\n", "boot.yaml: the bootstrap is empty", id="blank"),
        pytest.param(
            "# just a comment\n", "boot.yaml: the bootstrap is empty (only comments?)", id="comments"
        ),
        pytest.param(
            "- node\n", "boot.yaml: the bootstrap must be a mapping (Bootstrap fields), not a list", id="list"
        ),
        pytest.param(
            "just text",
            "boot.yaml: the bootstrap must be a mapping (Bootstrap fields), not a str",
            id="scalar",
        ),
        pytest.param(
            "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 5m\n",
            'boot.yaml: static_resources.clusters[0].connect_timeout: Duration must end with letter "s": 5m',
            id="duration",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - name: a\n  - name: 7\n",
            "boot.yaml: static_resources.listeners[1].name: expected string or bytes-like object, got 'int'",
            id="wrong-type-located-by-value",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n"
            "      - typed_config: {'@type': type.googleapis.com/acme.Filter}\n",
            "boot.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config: "
            "Can not find message descriptor by type_url: type.googleapis.com/acme.Filter",
            id="unknown-type-url",
        ),
        pytest.param(
            "static_resources: {clusters: [{name: a, type: STATIC, cluster_type: {name: x}}]}",
            'boot.yaml: static_resources.clusters[0]: Message type "envoy.config.cluster.v3.Cluster" should not have '
            'multiple "cluster_discovery_type" oneof fields',
            id="two-oneof-members",
        ),
        pytest.param(
            "admin: {access_log: [{typed_config: {'@type': null}}]}",
            "boot.yaml: admin.access_log[0].typed_config.@type: must be a type URL string",
            id="type-url-not-a-string",
        ),
        pytest.param(
            "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 99999999999}}}",
            "boot.yaml: admin.address.socket_address.port_value: Value out of range: 99999999999",
            id="uint32-range",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - typed_config:\n"
            "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
            "          route_config: {virtual_hosts: [{domains: x}]}\n",
            "boot.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config."
            "virtual_hosts[0].domains: repeated field domains must be in [] which is x",
            id="scalar-for-list",
        ),
    ],
)
def test_text_problems(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_json_is_recognised_by_content_and_by_extension() -> None:
    assert parse_bootstrap('{\n\t"node": {\n\t\t"id": "tabs"\n\t}\n}').node.id == "tabs"
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap("node: {id: yaml}", source="boot.json")
    assert raised.value.problems[0].startswith("boot.json:1:1: JSON syntax error")


def test_load_bootstrap_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "boot.yaml"
    path.write_text("node: {id: from-file}\n")
    assert load_bootstrap(path).node.id == "from-file"
    assert load_bootstrap(str(path)).node.id == "from-file"


def test_load_bootstrap_names_the_file_in_read_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(missing)
    assert raised.value.problems == [f"{missing}: cannot read the bootstrap: No such file or directory"]

    binary = tmp_path / "boot.yaml"
    binary.write_bytes(b"node: {id: \xff}\n")
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(binary)
    assert raised.value.problems == [
        f"{binary}: cannot read the bootstrap: not UTF-8 text (invalid start byte)"
    ]

    syntax = tmp_path / "bad.yaml"
    syntax.write_text("node:\n  id: [\n")
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(syntax)
    assert raised.value.problems[0].startswith(f"{syntax}:3:1: YAML error:")


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap("static_resources: {clusters: [{name: a, type: EDS}, {type: LOGICAL_DNS}]}")
    assert str(raised.value).splitlines() == [
        "static_resources.clusters[0].eds_cluster_config: is required for type EDS; give eds_config {ads: {}}",
        "static_resources.clusters[1].name: is required",
        "static_resources.clusters[1].type: LOGICAL_DNS is not supported; use STATIC, STRICT_DNS or EDS",
    ]


# --------------------------------------------------------------------------- robustness

_EXAMPLE = yaml.safe_load((Path(__file__).parent / "data" / "full.yaml").read_text())


def _field_paths(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _field_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from _field_paths(value, (*path, index))


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=4)
    | st.sampled_from(["1s", "-1s", "*", "a*b", "HTTP2", "EDS", "10.0.0.1", "\\1", "(", ":path", "envoy.x"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "@type", "cluster", "prefix", "weight", "x"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(list(_field_paths(_EXAMPLE))), _values), min_size=1, max_size=3
    )
)
def test_any_mangled_bootstrap_raises_config_error_or_compiles(
    mutations: list[tuple[tuple[Any, ...], Any]],
) -> None:
    """Whatever a field holds, the loader answers with a Config or a ConfigError, never a crash.
    (This found protobuf raising AttributeError for "@type": null.)"""
    doc = copy.deepcopy(_EXAMPLE)
    for path, value in mutations:
        node = doc
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier mutation moved the path
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
    try:
        parse_bootstrap(json.dumps(doc))
    except ConfigError as err:
        assert err.problems
        assert all(isinstance(p, str) and p for p in err.problems)
