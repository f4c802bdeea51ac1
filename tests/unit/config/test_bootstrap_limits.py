"""Hostile configuration files (issue 12, finding 8): refused with one line, quickly.

A 600-byte YAML alias bomb spun the loader for minutes; 10,000-deep lists or maps ended in a
RecursionError. ``meshproxy.config.limits`` bounds the file's size, its nesting and what its
aliases expand to before any object is built. The time bound is the pytest-timeout marker, not
an assertion on measured time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshproxy.config import limits
from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap
from meshproxy.errors import ConfigError

DEEP = 10_000


def billion_laughs() -> str:
    """Nine levels, each a list of nine aliases of the level below: 9⁹ strings from ~600 bytes."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def refusal(text: str, source: str = "boot.yaml") -> str:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(text, source=source)
    assert raised.value.source == source
    assert len(raised.value.problems) == 1, raised.value.problems
    return raised.value.problems[0]


@pytest.mark.timeout(10)
def test_alias_bomb_is_refused() -> None:
    text = billion_laughs()
    assert len(text) < 700
    assert refusal(text).endswith(
        f"the document expands to more than {limits.MAX_NODES:,} nodes (YAML aliases repeat what they name); "
        "meshproxy refuses it"
    )


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "source"),
    [
        pytest.param("a: " + "[" * DEEP + "]" * DEEP + "\n", "boot.yaml", id="yaml-flow-list"),
        pytest.param("a: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", "boot.yaml", id="yaml-flow-map"),
        pytest.param("a:\n" + "- " * DEEP + "1\n", "boot.yaml", id="yaml-block-list"),
        # Block mappings indent each level: 1,000 levels are half a megabyte already.
        pytest.param(
            "".join(f"{' ' * i}k:\n" for i in range(1000)) + " " * 1000 + "k: 1\n",
            "boot.yaml",
            id="yaml-block-map",
        ),
        pytest.param('{"a": ' + "[" * DEEP + "]" * DEEP + "}", "boot.json", id="json-list"),
        pytest.param('{"a": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}", "boot.json", id="json-map"),
    ],
)
def test_deep_nesting_is_refused_with_a_message(text: str, source: str) -> None:
    problem = refusal(text, source)
    assert problem.startswith("line ")
    assert "nest" in problem


def test_deep_nesting_through_an_alias_is_refused() -> None:
    inner = "[" * 40 + "1" + "]" * 40
    outer = "[" * 10 + "*a" + "]" * 10
    problem = refusal(f"a: &a {inner}\nb: {outer}\n")
    assert "alias *a" in problem and f"deeper than {limits.MAX_DEPTH} levels" in problem


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    assert refusal("a: &a [1, *a]\n") == "line 1, column 11: alias *a is inside the node it names"


def test_nesting_up_to_the_bound_is_read() -> None:
    """A bootstrap nested to the bound parses as far as the schema (metadata is a Struct)."""
    depth = limits.MAX_DEPTH - 3  # the document, node and metadata are the first three
    value = "[" * depth + "]" * depth
    config = parse_bootstrap(f"node: {{id: n, metadata: {{deep: {value}}}}}\n")
    assert config.node.id == "n"


def test_a_few_aliases_still_load() -> None:
    text = """
cluster_defaults: &defaults
  connect_timeout: 0.25s
  type: STATIC
static_resources:
  clusters:
  - <<: *defaults
    name: a
  - <<: *defaults
    name: b
"""
    with pytest.raises(ConfigError) as raised:  # "cluster_defaults" is not a Bootstrap field ...
        parse_bootstrap(text)
    assert [p.split(":")[0] for p in raised.value.problems] == ["cluster_defaults"]
    config = parse_bootstrap(text, allow_unknown_fields=True)  # ... and allowed, the aliases load
    assert [c.name for c in config.clusters] == ["a", "b"]
    assert config.clusters[0].connect_timeout == config.clusters[1].connect_timeout == 0.25


def test_a_file_over_the_size_bound_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("node: {id: n}\n" + "#" * limits.MAX_BYTES + "\n")
    with pytest.raises(ConfigError) as raised:
        load_bootstrap(big)
    assert raised.value.source == str(big)
    assert raised.value.problems == ["the file is larger than 4 MiB, the most meshproxy reads"]
    with pytest.raises(ConfigError) as raised:
        load_bootstrap("/dev/zero")
    assert raised.value.problems == ["the file is larger than 4 MiB, the most meshproxy reads"]
