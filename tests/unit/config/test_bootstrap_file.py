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
            "line 4, column 6: YAML error: expected ',' or ']', but got ':' (while parsing a flow sequence)",
            id="yaml-syntax",
        ),
        pytest.param(
            "node:\n\tid: a\n",
            "line 2, column 1: YAML error: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
            id="yaml-tab",
        ),
        pytest.param(
            "node: {id: a}\nadmin: {}\nnode: {id: b}\n",
            "line 3, column 1: YAML error: duplicate key 'node' (first on line 1)",
            id="yaml-duplicate-key",
        ),
        pytest.param(
            '{\n  "node": {"id": "a",}\n}',
            "line 2, column 22: JSON syntax error: Expecting property name enclosed in double quotes",
            id="json-syntax",
        ),
        pytest.param(
            '{"node": {}, "node": {}}',
            'JSON syntax error: duplicate key "node"',
            id="json-duplicate-key",
        ),
        pytest.param("", "the bootstrap is empty", id="empty"),
        pytest.param("  \n\n", "the bootstrap is empty", id="blank"),
        pytest.param("# just a comment\n", "the bootstrap is empty (only comments?)", id="comments"),
        pytest.param("- node\n", "the bootstrap must be a mapping of fields, not a list", id="list"),
        pytest.param(
            "just text",
            "the bootstrap must be a mapping of fields, not a str",
            id="scalar",
        ),
        pytest.param(
            "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 5m\n",
            'static_resources.clusters[0].connect_timeout: "5m" is not a duration in seconds with an "s": "300s", "0.25s"',
            id="duration",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - name: a\n  - name: 7\n",
            'static_resources.listeners[1].name: must be a string, not 7 (quote it: "7")',
            id="wrong-type",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n"
            "      - typed_config: {'@type': type.googleapis.com/acme.Filter}\n",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.@type: "
            '"type.googleapis.com/acme.Filter" names no message of the Envoy, xDS or UDPA APIs meshproxy knows',
            id="unknown-type-url",
        ),
        pytest.param(
            "static_resources: {clusters: [{name: a, type: STATIC, cluster_type: {name: x}}]}",
            "static_resources.clusters[0].cluster_type: give only one of type and cluster_type (one of "
            "cluster_discovery_type)",
            id="two-oneof-members",
        ),
        pytest.param(
            "admin: {access_log: [{typed_config: {'@type': null}}]}",
            "admin.access_log[0].typed_config.@type: must be a type URL string",
            id="type-url-not-a-string",
        ),
        pytest.param(
            "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 99999999999}}}",
            "admin.address.socket_address.port_value: 99999999999 is out of range (uint32: 0..4294967295)",
            id="uint32-range",
        ),
        pytest.param(
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - typed_config:\n"
            "          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
            "          route_config: {virtual_hosts: [{domains: x}]}\n",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config."
            'virtual_hosts[0].domains: must be a list ([...]), not the string "x"',
            id="scalar-for-list",
        ),
    ],
)
def test_text_problems(text: str, expected: str) -> None:
    """Problems with the text stop there; a problem in a field comes first, with whatever the
    compiler then finds in the rest of the (incomplete) documents here."""
    problems = problems_of(text)
    assert problems[0] == expected
    assert len(problems) == 1 or expected.startswith("static_resources") or expected.startswith("admin")


def test_json_is_recognised_by_content_and_by_extension() -> None:
    assert parse_bootstrap('{\n\t"node": {\n\t\t"id": "tabs"\n\t}\n}').node.id == "tabs"
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap("node: {id: yaml}", source="boot.json")
    assert raised.value.source == "boot.json"
    assert raised.value.problems[0].startswith("line 1, column 1: JSON syntax error")


def test_load_bootstrap_reads_a_path(tmp_path: Path) -> None:
    path = tmp_path / "boot.yaml"
    path.write_text("node: {id: from-file}\n")
    assert load_bootstrap(path).node.id == "from-file"
    assert load_bootstrap(str(path)).node.id == "from-file"


def test_load_bootstrap_names_the_file_in_read_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(missing)
    assert raised.value.source == str(missing)
    assert raised.value.problems == ["cannot read the bootstrap: No such file or directory"]

    binary = tmp_path / "boot.yaml"
    binary.write_bytes(b"node: {id: \xff}\n")
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(binary)
    assert raised.value.problems == ["cannot read the bootstrap: not UTF-8 text (invalid start byte)"]

    syntax = tmp_path / "bad.yaml"
    syntax.write_text("node:\n  id: [\n")
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(syntax)
    assert raised.value.source == str(syntax)
    assert raised.value.problems[0].startswith("line 3, column 1: YAML error:")


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(
            "static_resources: {clusters: [{name: a, type: EDS}, {type: LOGICAL_DNS}]}"
        )  # one endpoint: none
    assert str(raised.value).splitlines() == [
        "static_resources.clusters[0].eds_cluster_config: is required for type EDS; give eds_config {ads: {}}",
        "static_resources.clusters[1].name: is required",
        "static_resources.clusters[1].load_assignment: a LOGICAL_DNS cluster needs exactly one locality "
        "with exactly one lb_endpoint",
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


_UNNAMED_TCP = """
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}"""


def test_static_listeners_without_a_name_get_distinct_generated_ones() -> None:
    # Envoy allocates a UUID for a static listener without a name; only LDS needs names.
    text = (
        "static_resources:\n  listeners:"
        + _UNNAMED_TCP.format(port=18080)
        + _UNNAMED_TCP.format(port=18081)
        + "\n  clusters:\n  - name: c\n    type: STATIC\n    load_assignment: {cluster_name: c}\n"
    )
    config = parse_bootstrap(text, source="boot.yaml")
    names = [ln.name for ln in config.listeners]
    assert len(names) == 2 and len(set(names)) == 2
    assert all(len(name) == 36 and name.count("-") == 4 for name in names)
