"""request_hash: Envoy's hash_policy walk (header, cookie, query parameter, source IP; terminal)."""

from __future__ import annotations

from meshproxy.config.policy import HashPolicy
from meshproxy.router.hashing import request_hash
from meshproxy.upstream.lb.ring_hash import xxhash64

HEADERS = [(b"x-user", b"alice"), (b"cookie", b"a=1; session=s42; b=2")]


def h(*policies: HashPolicy, target: bytes = b"/p?k=v&id=7", peer: bytes = b"10.0.0.9") -> int | None:
    return request_hash(tuple(policies), HEADERS, b"example.com", target, peer)


def test_each_input_hashes_with_xxhash64() -> None:
    assert h(HashPolicy("header", "x-user")) == xxhash64(b"alice")
    assert h(HashPolicy("cookie", "session")) == xxhash64(b"s42")
    assert h(HashPolicy("query_parameter", "id")) == xxhash64(b"7")
    assert h(HashPolicy("source_ip")) == xxhash64(b"10.0.0.9")
    assert h(HashPolicy("header", ":authority")) == xxhash64(b"example.com")


def test_missing_inputs_give_no_hash() -> None:
    assert (
        h(HashPolicy("header", "x-none"), HashPolicy("cookie", "none"), HashPolicy("query_parameter", "q"))
        is None
    )
    assert h(HashPolicy("query_parameter", "id"), target=b"/p") is None


def test_policies_combine_by_rotate_and_xor_and_terminal_stops() -> None:
    a, b = xxhash64(b"alice"), xxhash64(b"7")
    combined = (((a << 1) | (a >> 63)) & ((1 << 64) - 1)) ^ b
    assert h(HashPolicy("header", "x-user"), HashPolicy("query_parameter", "id")) == combined
    assert h(HashPolicy("header", "x-user", terminal=True), HashPolicy("query_parameter", "id")) == a
    # A terminal policy that found nothing does not stop the walk.
    assert h(HashPolicy("header", "x-none", terminal=True), HashPolicy("query_parameter", "id")) == b
