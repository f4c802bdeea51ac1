"""Request path normalisation before routing (Envoy's HCM ``normalize_path``, ``merge_slashes``,
``path_with_escaped_slashes_action``).

Owns one pure function, ``normalize``, that turns a request target into the target routes and
filters see and the upstream receives, or into a refusal or a redirect. A sidecar enforces
path-based policy (a route that denies ``/admin``) in front of applications that resolve
``/x/../admin``, ``//admin`` or ``/%61dmin`` to ``/admin`` themselves; matching must happen on
the path the application will act on, so every such spelling is reduced to one.

Order, as Envoy's ``ConnectionManagerUtility::maybeNormalizePath``:
1. Escaped slashes (``%2F``, ``%5C``, any case): ``KEEP_UNCHANGED`` leaves them;
   ``REJECT_REQUEST`` refuses (400); ``UNESCAPE_AND_FORWARD`` decodes them to ``/`` and ``\\``;
   ``UNESCAPE_AND_REDIRECT`` decodes them and answers with a redirect to the result.
2. ``normalize_path`` (RFC 3986 §6.2.2): percent-encodings of unreserved characters are decoded
   (§2.3), the rest have their hex digits upper-cased, ``\\`` becomes ``/`` (as browsers and
   Envoy's Chromium-derived canonicaliser treat it), bytes a path may not hold are
   percent-encoded, and dot segments are removed (§5.2.4, ``%2e`` included since it decodes to
   ``.`` first). A malformed percent-encoding refuses the request (400), as Envoy's does.
3. ``merge_slashes``: runs of ``/`` become one.
The query string is never touched. Cost: requests whose path holds none of ``%``, ``\\``, ``//``,
``/.`` return after four byte searches; otherwise O(length of the path).
Must not import asyncio or the configuration protos.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshproxy.config.model import PathPolicy


class Outcome(Enum):
    FORWARD = 0  # route (and forward) the returned target
    REJECT = 1  # answer 400
    REDIRECT = 2  # answer a redirect to the returned target


_HEX = b"0123456789ABCDEFabcdef"
# RFC 3986 §2.3 unreserved characters: a percent-encoding of one of them means the character.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Bytes a path segment may hold as they are (RFC 3986 pchar without "%"), plus "/".
_PATH_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_ESCAPED_SLASHES = (b"%2F", b"%2f", b"%5C", b"%5c")


def normalize(target: bytes, policy: PathPolicy) -> tuple[Outcome, bytes]:
    """The target (origin form: path, then ``?query``) after ``policy``, and what to do with it."""
    q = target.find(b"?")
    path, query = (target, b"") if q < 0 else (target[:q], target[q:])
    outcome = Outcome.FORWARD
    if policy.escaped_slashes != "KEEP_UNCHANGED" and b"%" in path and _has_escaped_slash(path):
        if policy.escaped_slashes == "REJECT_REQUEST":
            return Outcome.REJECT, target
        path = path.replace(b"%2F", b"/").replace(b"%2f", b"/").replace(b"%5C", b"\\").replace(b"%5c", b"\\")
        if policy.escaped_slashes == "UNESCAPE_AND_REDIRECT":
            outcome = Outcome.REDIRECT
    if policy.normalize and (b"%" in path or b"\\" in path or b"/." in path or _has_unsafe(path)):
        canonical = canonical_path(path)
        if canonical is None:
            return Outcome.REJECT, target
        path = canonical
    if policy.merge_slashes and b"//" in path:
        path = merge_slashes(path)
    return outcome, path + query


def _has_escaped_slash(path: bytes) -> bool:
    return any(e in path for e in _ESCAPED_SLASHES)


def _has_unsafe(path: bytes) -> bool:
    # bytes.translate with a deletion table is one C pass; what survives is unsafe.
    return bool(path.translate(None, _SAFE_TABLE))


_SAFE_TABLE = bytes(sorted(_PATH_SAFE | {0x25, 0x5C}))


def canonical_path(path: bytes) -> bytes | None:
    """RFC 3986 normalisation of an absolute path; None if a percent-encoding is malformed."""
    out = bytearray()
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == 0x25:  # "%"
            hi, lo = path[i + 1 : i + 2], path[i + 2 : i + 3]
            if not hi or not lo or hi not in _HEX or lo not in _HEX:
                return None
            value = int(path[i + 1 : i + 3], 16)
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + path[i + 1 : i + 3].upper()
            i += 3
            continue
        if c == 0x5C:  # "\"
            out.append(0x2F)
        elif c in _PATH_SAFE:
            out.append(c)
        else:
            out += b"%%%02X" % c
        i += 1
    if not out.startswith(b"/"):
        out[0:0] = b"/"
    return remove_dot_segments(bytes(out))


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 on an absolute path (segments are split on "/"; a ".." above the root
    stays at the root)."""
    if b"." not in path:
        return path
    segments = path.split(b"/")
    out: list[bytes] = []
    for seg in segments[1:]:
        if seg == b".":
            continue
        if seg == b"..":
            if out:
                out.pop()
            continue
        out.append(seg)
    # A path ending in "/." or "/.." names a directory: keep the trailing slash.
    if segments[-1] in (b".", b".."):
        out.append(b"")
    return b"/" + b"/".join(out)


def merge_slashes(path: bytes) -> bytes:
    while b"//" in path:
        path = path.replace(b"//", b"/")
    return path
