"""GoawayReader: the GOAWAY aioquic drops, read from the server's control stream in any split."""

from __future__ import annotations

import pytest
from aioquic.buffer import Buffer

from meshproxy.quic.upstream import GoawayReader


def varint(n: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(n)
    return buf.data


def frame(kind: int, payload: bytes) -> bytes:
    return varint(kind) + varint(len(payload)) + payload


CONTROL = varint(0x00) + frame(0x04, varint(0x01) + varint(4096)) + frame(0x07, varint(400))


@pytest.mark.parametrize("cut", range(1, len(CONTROL)))
def test_goaway_is_found_however_the_stream_is_split(cut: int) -> None:
    reader = GoawayReader()
    reader.feed(3, CONTROL[:cut])
    reader.feed(3, CONTROL[cut:])
    assert reader.goaway_id == 400 and reader.control == 3


def test_other_server_streams_are_not_the_control_stream() -> None:
    reader = GoawayReader()
    reader.feed(7, varint(0x02) + frame(0x07, varint(8)))  # an encoder stream carrying GOAWAY-like bytes
    reader.feed(0, frame(0x07, varint(8)))  # a request stream
    assert reader.goaway_id is None and reader.control is None
    reader.feed(3, CONTROL)
    assert reader.goaway_id == 400
