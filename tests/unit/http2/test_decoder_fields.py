"""The HPACK decoder's bounds and the request-block check, without sockets."""

from __future__ import annotations

import re

import pytest
from hpack import Decoder, Encoder
from hpack.exceptions import OversizedHeaderListError
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.http2.decoder import BoundedDecoder
from meshproxy.http2.fields import Malformed, Underscored, checked

names = st.binary(min_size=1, max_size=12).map(lambda b: bytes(0x61 + c % 26 for c in b))
fields = st.lists(st.tuples(names, st.binary(max_size=40)), max_size=30)


@given(st.lists(fields, min_size=1, max_size=4))
def test_under_the_bounds_it_decodes_what_hpack_decodes(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    encoder, reference, bounded = Encoder(), Decoder(), BoundedDecoder(1 << 20, 1000)
    for block in blocks:  # one connection: the dynamic table carries from block to block
        data = encoder.encode(block)
        assert bounded.decode(data, raw=True) == reference.decode(data, raw=True)


def test_one_field_over_the_count_is_refused_while_decoding() -> None:
    encoder = Encoder()
    data = encoder.encode([(b"a", b"")] * 101)
    assert len(BoundedDecoder(1 << 20, 101).decode(data)) == 101
    with pytest.raises(OversizedHeaderListError, match="more than 100 header fields"):
        BoundedDecoder(1 << 20, 100).decode(data)


def test_the_size_counts_32_per_field_as_rfc_7541_does() -> None:
    data = Encoder().encode([(b"a", b"b")] * 10)  # 10 * (1 + 1 + 32) = 340
    assert len(BoundedDecoder(340, 100).decode(data)) == 10
    with pytest.raises(OversizedHeaderListError):
        BoundedDecoder(339, 100).decode(data)


def _request(**extra: bytes) -> list[tuple[bytes, bytes]]:
    block = {b":method": b"GET", b":scheme": b"http", b":authority": b"example.com:8080", b":path": b"/a?b=c"}
    block.update({k.encode(): v for k, v in extra.items() if k.startswith(":")})
    return list(block.items())


def test_a_well_formed_block_crosses_unchanged() -> None:
    block = [*_request(), (b"x-ok", b"1"), (b"te", b"trailers"), (b"x-tab", b"a\tb"), (b"x-obs", b"\xe9")]
    assert checked(block, "ALLOW") == (block, 0)
    assert checked([(b":method", b"OPTIONS"), (b":path", b"*")], "ALLOW")[1] == 0


@pytest.mark.parametrize(
    "field",
    [
        (b":method", b"G T"),
        (b":method", b""),
        (b":path", b"/a b"),
        (b":path", b"/a#f"),
        (b":path", b"http://x/"),
        (b":path", b"/\x80"),
        (b":authority", b"u@h"),
        (b":authority", b"h/p"),
        (b"x(y)", b"1"),
        (b"a,b", b"1"),
        (b"x-big", b"a\x1db"),
        (b"x-big", b"\x01"),
        (b"x-big", b"a\x7f"),
        (b":scheme", b"ht\x0btp"),
    ],
)
def test_a_malformed_field_is_refused(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(Malformed):
        checked([field], "ALLOW")


def test_underscores_follow_the_action() -> None:
    block = [*_request(), (b"x_a", b"1"), (b"x-b", b"2")]
    assert checked(block, "ALLOW") == (block, 0)
    assert checked(block, "DROP_HEADER") == ([*_request(), (b"x-b", b"2")], 1)
    with pytest.raises(Underscored):
        checked(block, "REJECT_REQUEST")


# The grammar the checks implement, written as regular expressions (RFC 9110 §5.6.2 token,
# RFC 9113 §8.3.1 :path and :authority): the reference the fast table lookups must agree with.
_REFERENCE = {
    b":method": re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"),
    b":path": re.compile(rb"/[!-\"$-~]*|\*"),
    b":authority": re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=\[\]:]*"),
    b"name": re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"),
}
_TEXT = st.text("/*#@:%$aZ09-_ \x7f\x00é", max_size=12).map(str.encode)
_BYTES = st.binary(max_size=12) | _TEXT | _TEXT.map(lambda t: b"/" + t)  # paths start with /


@settings(max_examples=500)
@given(st.sampled_from([b":method", b":path", b":authority", b"name"]), _BYTES)
def test_checks_agree_with_the_grammar(which: bytes, text: bytes) -> None:
    if which == b"name":
        if not text or text[0] == 0x3A:
            return  # empty names and pseudo-headers are the codecs' to refuse
        block = [(text, b"v")]
    else:
        block = [(which, text)]
    valid = _REFERENCE[which].fullmatch(text) is not None
    try:
        checked(block, "ALLOW")
    except Malformed:
        assert not valid
    else:
        assert valid
