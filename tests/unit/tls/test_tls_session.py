"""Two TLS engines in memory after the handshake: data, close_notify, key update, resumption."""

from __future__ import annotations

import os
import struct

import pytest
from unit.tls.tls_fixtures import Leaf, Link, Pki, spiffe_id

from meshproxy.tls import SessionCache, TlsContext, TlsError


@pytest.fixture
def contexts(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> tuple[TlsContext, TlsContext]:
    return TlsContext(pki.config(server_leaf, server_side=True)), TlsContext(
        pki.config(client_leaf, server_side=False)
    )


@pytest.fixture
def link(contexts: tuple[TlsContext, TlsContext]) -> Link:
    done = Link(*contexts).pump()
    assert done.established
    return done


def records(wire: bytes) -> list[int]:
    """The content types of the TLS records in ``wire`` (23: protected, 21: alert, 22: handshake)."""
    types, at = [], 0
    while at < len(wire):
        kind, _version, length = struct.unpack_from("!BHH", wire, at)
        types.append(kind)
        at += 5 + length
    return types


def test_data_both_ways_in_whole_records(link: Link) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)  # larger than the engine's read buffer
    link.client.write(big)
    link.server.write(b"pong")
    link.pump()
    assert link.received == {"server": big, "client": b"pong"}


def test_close_notify_ends_one_direction(link: Link) -> None:
    link.client.close()
    link.pump()
    assert link.server.peer_closed and not link.client.peer_closed
    with pytest.raises(TlsError, match="not open for writing"):
        link.client.write(b"late")
    link.server.write(b"still talking")  # TLS 1.3: the other direction stays open
    link.server.close()
    link.pump()
    assert link.received["client"] == b"still talking" and link.client.peer_closed


def test_eof_without_close_notify_ends_the_stream(link: Link) -> None:
    link.server.write(b"last words")
    link.client.receive_data(bytes(link.server.data_to_send()))
    link.client.receive_eof()
    assert link.client.read() == b"last words" and link.client.peer_closed


def test_key_update_is_sent_and_answered(link: Link) -> None:
    link.client.key_update()
    update = bytes(link.client.data_to_send())
    assert records(update) == [23]  # the KeyUpdate, already under the handshake's traffic keys
    link.server.receive_data(update)
    assert link.server.read() == b""
    link.server.write(b"after")
    answer = bytes(link.server.data_to_send())
    assert records(answer) == [23, 23]  # its own KeyUpdate (update_not_requested), then the data
    link.client.receive_data(answer)
    assert link.client.read() == b"after"
    link.client.write(b"again")  # both directions now run on the new keys
    link.pump()
    assert link.received["server"] == b"again"


def test_key_update_needs_an_open_connection(contexts: tuple[TlsContext, TlsContext]) -> None:
    fresh = Link(*contexts)
    with pytest.raises(TlsError, match=r"key update needs an open TLS 1\.3 connection"):
        fresh.client.key_update()


def test_resumption_keeps_the_hybrid_group(contexts: tuple[TlsContext, TlsContext]) -> None:
    server, client = contexts
    Link(server, client, session_key="upstream").pump()
    # The server's tickets follow its handshake flight; the client read them in the pump.
    assert client.sessions is not None and len(client.sessions) == 1
    again = Link(server, client, session_key="upstream").pump()
    assert again.established
    for side in (again.client, again.server):
        assert side.negotiated is not None
        assert side.negotiated.resumed and side.negotiated.group == "X25519MLKEM768"
        assert side.negotiated.peer_signature == ""  # resumption: no CertificateVerify
    assert again.client.negotiated and again.client.negotiated.peer_uris == (spiffe_id("server"),)
    assert again.server.negotiated and again.server.negotiated.peer_uris == (spiffe_id("client"),)
    other = Link(server, client, session_key="another upstream").pump()
    assert other.client.negotiated and not other.client.negotiated.resumed


def test_session_cache_is_bounded() -> None:
    cache = SessionCache(capacity=2)
    cache.put("a", b"A")
    cache.put("b", b"B")
    cache.put("a", b"A")  # stored again: now the most recent
    cache.put("c", b"C")
    assert len(cache) == 2 and (cache.get("a"), cache.get("b"), cache.get("c")) == (b"A", b"", b"C")


def test_alert_after_the_handshake_is_an_error(link: Link) -> None:
    link.server.receive_data(b"\x17\x03\x03\x00\x20" + bytes(32))  # a record that does not decrypt
    with pytest.raises(TlsError) as refused:
        link.server.read()
    assert not refused.value.by_peer
    link.client.receive_data(bytes(link.server.data_to_send()))
    with pytest.raises(TlsError, match="bad_record_mac") as told:
        link.client.read()
    assert told.value.by_peer
