"""Envoy's ``safe_regex``: RE2 patterns, compiled once, matched in time linear in the input.

Owns every regular expression that comes from configuration (route ``safe_regex``, header and
query parameter string matchers, ``regex_rewrite``): compiling it with Envoy's RE2 options,
refusing what RE2 refuses and what exceeds the program-size limit, full matching over request
bytes, and RE2's rewrite syntax and ``GlobalReplace``. Must not depend on protobuf, the config
compilers, asyncio or sockets; Python's ``re`` must never see a configured pattern (it
backtracks: ``(a+)+$`` against 30 characters takes seconds, and blocks every other request).

Engine. ``google-re2``'s public ``re2`` module wraps each match in a Python generator and a
match object (about 1.5 µs for a short path); the pybind11 class under it, ``re2._re2.RE2``,
answers a full match in one call, so this module uses that class directly, as the ``re2``
module itself does. The class is RE2 and only RE2: a pattern it refuses raises here, there is
no fallback to ``re``. It is loaded with the first pattern compiled (about 1.5 MiB resident,
docs/memory.md): a configuration without a ``safe_regex`` never maps it.

Semantics are Envoy's (``source/common/common/regex.cc``): ``RE2::Quiet`` options (UTF-8,
Perl classes, case-sensitive, 8 MiB of memory), matching over bytes as RE2 is handed them (a
byte that is not UTF-8 matches nothing but ``\\C``), ``RE2::FullMatch`` for matchers, and a
program-size limit: ``RegexMatcher.google_re2.max_program_size`` when set, else Envoy's
``re2.max_program_size.error_level`` default of 100.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# Envoy's runtime key re2.max_program_size.error_level defaults to 100.
DEFAULT_MAX_PROGRAM_SIZE = 100

_NO_SPAN = (-1, -1)
# How long the bounds of RE2::PossibleMatchRange may be: longer is tighter, and costs only
# a longer comparison on the request path.
_RANGE_LENGTH = 32
_DIGITS = frozenset("0123456789")


class RegexError(ValueError):
    """RE2 refused a pattern or a rewrite; the message is the reason, for a field path to prefix."""


@dataclass(frozen=True, slots=True)
class _Engine:
    """RE2's class, its two anchors and the options for programs with and without captures."""

    re2: Any
    both: Any
    unanchored: Any
    capturing: Any
    match_only: Any


def _options(re2: Any, *, capture: bool) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2::Quiet: the reason goes to the field path, not stderr
    options.never_capture = not capture
    return options


@cache
def _engine() -> _Engine:
    from re2 import _re2

    re2 = _re2.RE2
    anchor = re2.Anchor
    return _Engine(
        re2, anchor.ANCHOR_BOTH, anchor.UNANCHORED, _options(re2, capture=True), _options(re2, capture=False)
    )


# A parsed RE2 rewrite string: literal bytes, or the number of a group (0: the whole match).
Rewrite = tuple[bytes | int, ...]


@dataclass(frozen=True, slots=True)
class Regex:
    """One compiled pattern; equal to another when their sources are equal."""

    source: str
    groups: int = field(compare=False)
    program_size: int = field(compare=False)
    # RE2::FullMatch: whether the pattern matches all of the bytes given (``_full_matcher``).
    fullmatch: Callable[[bytes], bool] = field(compare=False, repr=False)
    # The program with capture groups, which rewrites need.
    _capturing: Any = field(compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled again where it is unpickled (the worker processes get compiled configs): the
        # matchers are closures over RE2 programs, which do not pickle.
        return compile_regex, (self.source, self.program_size)

    def replace(self, rewrite: Rewrite, text: bytes) -> bytes:
        """RE2::GlobalReplace: every non-overlapping match in ``text`` replaced by ``rewrite``.

        As in RE2 (and unlike Python's ``re.sub``), an empty match right where the previous
        match ended is skipped, stepping over one UTF-8 character. Cost: one linear-time search
        per match.
        """
        search = self._capturing.Match
        unanchored = _engine().unanchored
        out: list[bytes] = []
        end = len(text)
        p = 0
        last_end = -1
        while p <= end:
            spans = search(unanchored, text, p, end)
            start, stop = spans[0]
            if start < 0:
                break
            out.append(text[p:start])
            if start == stop == last_end:
                step = _utf8_length(text, p)
                out.append(text[p : p + step])
                p += step
                continue
            for piece in rewrite:
                if isinstance(piece, int):
                    a, b = spans[piece]
                    if a >= 0:
                        out.append(text[a:b])
                else:
                    out.append(piece)
            p = last_end = stop
        if not out:
            return text
        out.append(text[p:])
        return b"".join(out)


def compile_regex(source: str, max_program_size: int = DEFAULT_MAX_PROGRAM_SIZE) -> Regex:
    """``source`` compiled as Envoy compiles a RegexMatcher; RegexError says why not."""
    encoded = source.encode()
    engine = _engine()
    capturing = engine.re2(encoded, engine.capturing)
    if not capturing.ok():
        raise RegexError(f'"{source}" does not compile: {capturing.error().decode(errors="replace")}')
    size = capturing.ProgramSize()
    if size > max_program_size:
        raise RegexError(
            f'"{source}" has an RE2 program size of {size}, over the limit of {max_program_size}; '
            "simplify the pattern or raise google_re2.max_program_size"
        )
    groups = capturing.NumberOfCapturingGroups()
    match_only = engine.re2(encoded, engine.match_only) if groups else capturing
    return Regex(source, groups, size, _full_matcher(match_only, engine.both), capturing)


def _full_matcher(program: Any, both: Any) -> Callable[[bytes], bool]:
    """RE2::FullMatch over bytes, behind RE2::PossibleMatchRange's bounds when RE2 can give them.

    Every full match lies between the bounds, so most paths a regex route does not match (all
    those the routes after it serve) cost two comparisons instead of a call into RE2 (about
    80 ns against 600 ns here). ``program`` has no capture groups: RE2 then answers with its
    DFA alone, a third faster. ``both`` is RE2's ANCHOR_BOTH.
    """
    match = program.Match
    bounded, low, high = program.PossibleMatchRange(_RANGE_LENGTH)
    if not bounded:
        return lambda value: match(both, value, 0, len(value))[0] != _NO_SPAN
    return lambda value: low <= value <= high and match(both, value, 0, len(value))[0] != _NO_SPAN


def parse_rewrite(substitution: str, groups: int) -> Rewrite:
    """An RE2 rewrite string (``\\0``..``\\9`` name a group, ``\\\\`` is a backslash, nothing else
    may follow one) for a pattern with ``groups`` capture groups; RegexError says why not."""
    pieces: list[bytes | int] = []
    literal: list[str] = []
    i = 0
    while i < len(substitution):
        char = substitution[i]
        if char != "\\":
            literal.append(char)
            i += 1
            continue
        escaped = substitution[i + 1 : i + 2]
        if escaped == "\\":
            literal.append(escaped)
        elif escaped in _DIGITS:
            group = int(escaped)
            if group > groups:
                raise RegexError(f"\\{group} names a group the pattern does not have (it has {groups})")
            if literal:
                pieces.append("".join(literal).encode())
                literal.clear()
            pieces.append(group)
        else:
            raise RegexError(f'"\\{escaped}" is not valid; only \\0 to \\9 and \\\\ may follow a backslash')
        i += 2
    if literal:
        pieces.append("".join(literal).encode())
    return tuple(pieces)


def _utf8_length(text: bytes, p: int) -> int:
    """Bytes in the UTF-8 character at ``p`` (1 at the end, or where the bytes are not UTF-8)."""
    lead = text[p] if p < len(text) else 0
    n = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    if n > 1:
        try:
            text[p : p + n].decode()
        except UnicodeDecodeError:
            return 1
    return n
