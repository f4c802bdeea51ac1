"""RE2 for every safe_regex: linear-time matching, RE2's refusals, the program-size limit, rewrites.

The catastrophic patterns below take Python's ``re`` exponential time in the input length (a
few dozen characters already cost seconds); each test has a pytest timeout far above what RE2
needs and far below what backtracking would take, and asserts the answer, never a duration.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2
from hypothesis import given
from hypothesis import strategies as st
from route_docs import R0, problems_of, route, route_config

from meshproxy.config.regex import DEFAULT_MAX_PROGRAM_SIZE, RegexError, compile_regex, parse_rewrite

N = 5_000  # characters of adversarial input: 2**N backtracking steps for re


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        pytest.param("(a+)+$", "a" * N + "!", False, id="nested-plus"),
        pytest.param("(a|a)*b", "a" * N, False, id="alternation-star"),
        pytest.param("(a*)*b", "a" * N, False, id="nested-star"),
        pytest.param("^(([a-z])+.)+[A-Z]([a-z])+$", "a" * N + "!", False, id="owasp-class"),
        pytest.param("(x+x+)+y", "x" * N, False, id="overlapping-plus"),
        pytest.param("/redos/(a+)+", "/redos/" + "a" * N + "!", False, id="issue-12-route"),
        pytest.param("(a+)+$", "a" * N, True, id="nested-plus-hit"),
        pytest.param("(x+x+)+y", "x" * N + "y", True, id="overlapping-plus-hit"),
    ],
)
def test_catastrophic_patterns_answer_in_linear_time(pattern: str, subject: str, matches: bool) -> None:
    regex = compile_regex(pattern)
    assert regex.fullmatch(subject.encode()) is matches
    # The rewrite path searches with the capturing program: linear too.
    replaced = regex.replace(parse_rewrite("<\\0>", regex.groups), subject.encode())
    assert (replaced == f"<{subject}>".encode()) is matches


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param("(a)\\1", "invalid escape sequence: \\1", id="backreference"),
        pytest.param("(?=a)", "invalid perl operator: (?=", id="lookahead"),
        pytest.param("(?<!a)b", "invalid perl operator: (?<!", id="lookbehind"),
        pytest.param("a++", "bad repetition operator: ++", id="possessive"),
        pytest.param("x{1001}", "invalid repetition size: {1001}", id="repeat-too-large"),
        pytest.param("\\Z", "invalid escape sequence: \\Z", id="python-only-escape"),
    ],
)
def test_patterns_re2_refuses_are_refused_with_re2_reason(pattern: str, reason: str) -> None:
    with pytest.raises(RegexError) as err:
        compile_regex(pattern)
    assert str(err.value) == f'"{pattern}" does not compile: {reason}'


@pytest.mark.parametrize(
    ("matcher", "where"),
    [
        ({"safe_regex": {"regex": "(a)\\1"}}, "match.safe_regex.regex"),
        (
            {"prefix": "/", "headers": [{"name": "x", "string_match": {"safe_regex": {"regex": "(?=a)"}}}]},
            "match.headers[0].string_match.safe_regex.regex",
        ),
        (
            {
                "prefix": "/",
                "query_parameters": [{"name": "q", "string_match": {"safe_regex": {"regex": "(a)\\1"}}}],
            },
            "match.query_parameters[0].string_match.safe_regex.regex",
        ),
    ],
)
def test_refusals_name_the_field_path(matcher: dict[str, Any], where: str) -> None:
    (problem,) = problems_of(route_config(route(matcher)))
    assert problem.startswith(f"{R0}.{where}: ")
    assert "does not compile: invalid " in problem


def test_regex_rewrite_pattern_refused_with_its_path() -> None:
    action = {"cluster": "a", "regex_rewrite": {"pattern": {"regex": "(?=x)"}, "substitution": "y"}}
    assert problems_of(route_config(route(route=action))) == [
        f'{R0}.route.regex_rewrite.pattern.regex: "(?=x)" does not compile: invalid perl operator: (?='
    ]


def test_program_size_over_envoys_default_limit_is_refused() -> None:
    assert DEFAULT_MAX_PROGRAM_SIZE == 100  # Envoy's re2.max_program_size.error_level default
    size = compile_regex("[a-z]{200}", max_program_size=10_000).program_size
    assert size > DEFAULT_MAX_PROGRAM_SIZE
    assert problems_of(route_config(route({"safe_regex": {"regex": "[a-z]{200}"}}))) == [
        f'{R0}.match.safe_regex.regex: "[a-z]{{200}}" has an RE2 program size of {size}, over the limit '
        "of 100; simplify the pattern or raise google_re2.max_program_size"
    ]


def test_max_program_size_is_honoured_both_ways() -> None:
    size = compile_regex("[a-z]{200}", max_program_size=10_000).program_size
    raised = {"google_re2": {"max_program_size": size}, "regex": "[a-z]{200}"}
    assert problems_of(route_config(route({"safe_regex": raised}))) == []
    lowered = {"google_re2": {"max_program_size": 5}, "regex": "/re/[0-9]+"}
    small = compile_regex("/re/[0-9]+").program_size
    assert problems_of(route_config(route({"safe_regex": lowered}))) == [
        f'{R0}.match.safe_regex.regex: "/re/[0-9]+" has an RE2 program size of {small}, over the limit '
        "of 5; simplify the pattern or raise google_re2.max_program_size"
    ]


def test_fullmatch_is_over_bytes_as_utf8() -> None:
    regex = compile_regex("/caf.")
    assert regex.fullmatch("/café".encode())
    assert not regex.fullmatch(b"/caf\xff")  # not UTF-8: "." does not match it, as in Envoy
    assert compile_regex("/caf\\C").fullmatch(b"/caf\xff")
    assert not compile_regex("a$").fullmatch(b"a\n")  # RE2's $ is the end of the text


# Small patterns whose PossibleMatchRange bounds are tight or absent, against subjects that
# fall inside, outside and at the edges of them.
_PATTERNS = ["/api/v[0-9]+/x", "(?i)/API/[a-c]+", ".*foo", "a|bc|", "[a-c]+/x", "\\C*b", "(ab)*", "/re/(a+)+"]


@given(
    pattern=st.sampled_from(_PATTERNS),
    subject=st.binary(max_size=12) | st.text("/apiv0129xAbcfo", max_size=14),
)
def test_fullmatch_agrees_with_re2s_own_fullmatch(pattern: str, subject: bytes | str) -> None:
    value = subject.encode() if isinstance(subject, str) else subject
    assert compile_regex(pattern).fullmatch(value) is (re2.fullmatch(pattern, value) is not None)


def test_replace_follows_re2_global_replace() -> None:
    def replace(pattern: str, rewrite: str, text: bytes) -> bytes:
        regex = compile_regex(pattern)
        return regex.replace(parse_rewrite(rewrite, regex.groups), text)

    # An empty match right after a match is skipped (Python's re.sub would give "-a-b--d-").
    assert replace("x*", "-", b"abxd") == b"-a-b-d-"
    # The skip steps over one UTF-8 character, not one byte.
    assert replace("", "-", "é".encode()) == "-é-".encode()
    assert replace("(a)|b", "[\\1]", b"ab") == b"[a][]"  # a group that did not take part is empty
    assert replace("o", "\\\\", b"foo") == b"f\\\\"
    assert replace("z", "y", b"abc") == b"abc"


@pytest.mark.parametrize(
    ("rewrite", "groups", "reason"),
    [
        ("\\d", 1, '"\\d" is not valid; only \\0 to \\9 and \\\\ may follow a backslash'),
        ("a\\", 1, '"\\" is not valid; only \\0 to \\9 and \\\\ may follow a backslash'),
        ("\\2", 1, "\\2 names a group the pattern does not have (it has 1)"),
    ],
)
def test_bad_rewrites_are_refused(rewrite: str, groups: int, reason: str) -> None:
    with pytest.raises(RegexError, match="^" + re2.escape(reason) + "$"):
        parse_rewrite(rewrite, groups)


def test_a_rewrite_is_literals_and_group_numbers() -> None:
    assert parse_rewrite("/\\2/é\\\\\\12", 2) == (b"/", 2, "/é\\".encode(), 1, b"2")
