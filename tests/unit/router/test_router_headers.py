"""Header mutations: removal before addition, the four append actions, level order."""

from __future__ import annotations

from meshproxy.config.model import HeaderMutations, HeaderValueOption
from meshproxy.router.headers import MutationLevel, apply_mutations, compile_mutations


def level(*add: tuple[str, str, str], remove: tuple[str, ...] = ()) -> MutationLevel:
    compiled = compile_mutations(
        HeaderMutations(
            to_add=tuple(HeaderValueOption(n, v, a) for n, v, a in add),  # type: ignore[arg-type]
            to_remove=remove,
        )
    )
    assert compiled is not None
    return compiled


def run(headers: list[tuple[bytes, bytes]], *levels: MutationLevel) -> list[tuple[bytes, bytes]]:
    apply_mutations(headers, *levels)
    return headers


APPEND = "append_if_exists_or_add"
IF_ABSENT = "add_if_absent"
OVERWRITE = "overwrite_if_exists_or_add"
IF_EXISTS = "overwrite_if_exists"


def test_empty_level_compiles_to_none() -> None:
    assert compile_mutations(HeaderMutations()) is None


def test_empty_values_are_dropped_as_envoy_does_without_keep_empty_value() -> None:
    assert compile_mutations(HeaderMutations(to_add=(HeaderValueOption("x", ""),))) is None


def test_names_are_lower_cased_and_encoded() -> None:
    assert run([], level(("X-Tag", "Wert", APPEND))) == [(b"x-tag", b"Wert")]


def test_removal_happens_before_addition() -> None:
    headers = [(b"x", b"old"), (b"y", b"1"), (b"x", b"older")]
    assert run(headers, level(("x", "new", APPEND), remove=("x",))) == [(b"y", b"1"), (b"x", b"new")]


def test_append_keeps_existing_values() -> None:
    assert run([(b"x", b"1")], level(("x", "2", APPEND))) == [(b"x", b"1"), (b"x", b"2")]


def test_add_if_absent() -> None:
    assert run([(b"x", b"1")], level(("x", "2", IF_ABSENT))) == [(b"x", b"1")]
    assert run([(b"y", b"1")], level(("x", "2", IF_ABSENT))) == [(b"y", b"1"), (b"x", b"2")]


def test_overwrite_if_exists_or_add_replaces_every_value() -> None:
    headers = [(b"x", b"1"), (b"y", b"-"), (b"x", b"2")]
    assert run(headers, level(("x", "3", OVERWRITE))) == [(b"y", b"-"), (b"x", b"3")]
    assert run([], level(("x", "3", OVERWRITE))) == [(b"x", b"3")]


def test_overwrite_if_exists_only_when_it_exists() -> None:
    assert run([(b"x", b"1")], level(("x", "2", IF_EXISTS))) == [(b"x", b"2")]
    assert run([(b"y", b"1")], level(("x", "2", IF_EXISTS))) == [(b"y", b"1")]


def test_conditions_see_the_headers_before_this_levels_additions() -> None:
    # Envoy decides every add of a level first, then applies them.
    assert run([], level(("x", "1", APPEND), ("x", "2", IF_ABSENT))) == [(b"x", b"1"), (b"x", b"2")]
    assert run([], level(("x", "1", APPEND), ("x", "2", IF_EXISTS))) == [(b"x", b"1")]


def test_removal_counts_for_the_conditions() -> None:
    assert run([(b"x", b"1")], level(("x", "2", IF_ABSENT), remove=("x",))) == [(b"x", b"2")]


def test_overwrites_are_applied_before_appends() -> None:
    headers = [(b"x", b"0")]
    assert run(headers, level(("x", "1", APPEND), ("x", "2", OVERWRITE))) == [(b"x", b"2"), (b"x", b"1")]


def test_levels_apply_most_specific_first_so_the_least_specific_overwrite_wins() -> None:
    route = level(("x", "route", OVERWRITE), ("a", "route", APPEND))
    vhost = level(("x", "vhost", OVERWRITE), ("a", "vhost", APPEND))
    headers = run([], route, vhost)
    assert headers == [(b"a", b"route"), (b"x", b"vhost"), (b"a", b"vhost")]


def test_a_later_level_can_remove_what_an_earlier_one_added() -> None:
    assert run([], level(("x", "1", APPEND)), level(remove=("X",))) == []
