"""The record path (``_records_c`` and its twin ``_records_py``): one suite for both.

Each test drives a connection set up by two ``TlsEngine``s in memory, through ``Records`` objects
made on the engines' own pyOpenSSL connections. Both twins may drive one connection in turn
(they share its SSL object), which is how the property below checks that they agree.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit.tls.tls_fixtures import Leaf, Link, Pki

from meshproxy import _ext
from meshproxy.tls import TlsContext, TlsError, _openssl, _records_py, records
from meshproxy.tls.engine import TlsEngine

RECORD = 16384  # TLS's largest plaintext per record


def established(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> Link:
    s = TlsContext(pki.config(server_leaf, server_side=True))
    c = TlsContext(pki.config(client_leaf, server_side=False), session_capacity=0)
    done = Link(s, c).pump()
    assert done.established
    return done


def pair(mod: ModuleType, done: Link) -> tuple[Any, Any]:
    """``Records`` of ``mod`` on the client's and the server's connection."""
    return mod.Records(done.client._conn), mod.Records(done.server._conn)


@pytest.fixture
def link(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> Link:
    return established(pki, server_leaf, client_leaf)


def test_one_receive_returns_every_record_of_a_chunk(records: ModuleType, link: Link) -> None:
    client, server = pair(records, link)
    payloads = [b"a" * 10, b"b" * RECORD, os.urandom(3 * RECORD + 7), b"c"]
    wire = b""
    for data in payloads:
        status, out = client.encrypt(data)
        assert status == _openssl.OK
        wire += out
    assert len(wire) > sum(map(len, payloads))  # several records, each with its header and tag
    assert server.receive(wire) == (b"".join(payloads), _openssl.WANT_READ, b"")  # nothing to answer


def test_a_record_split_over_calls_is_read_when_complete(records: ModuleType, link: Link) -> None:
    """The second call completes a 16 KiB record from a few hundred bytes: more plaintext than
    the ciphertext of that call (the compiled twin grows its buffer here)."""
    client, server = pair(records, link)
    data = os.urandom(RECORD)
    _, wire = client.encrypt(data)
    assert server.receive(wire[:-300]) == (b"", _openssl.WANT_READ, b"")
    assert server.receive(wire[-300:]) == (data, _openssl.WANT_READ, b"")


def test_encrypt_accepts_any_buffer_and_nothing(records: ModuleType, link: Link) -> None:
    client, server = pair(records, link)
    for data in (b"bytes", bytearray(b"bytearray"), memoryview(b"xmemoryview")[1:]):
        status, out = client.encrypt(data)
        assert status == _openssl.OK
        assert server.receive(out)[:2] == (bytes(data), _openssl.WANT_READ)
    assert client.encrypt(b"") == (_openssl.OK, b"")
    assert client.write(b"") == _openssl.OK and client.drain() == b""


def test_close_notify_reads_as_closed(records: ModuleType, link: Link) -> None:
    client, server = pair(records, link)
    _, out = client.encrypt(b"last words")
    link.client.close()
    assert server.receive(out + client.drain())[:2] == (b"last words", _openssl.CLOSED)


def test_eof_without_close_notify_reads_as_eof(records: ModuleType, link: Link) -> None:
    client, server = pair(records, link)
    _, out = client.encrypt(b"cut short")
    server.set_eof()
    assert server.receive(out)[:2] == (b"cut short", _openssl.EOF)


def test_a_forged_record_fails_and_the_alert_waits_in_the_bio(records: ModuleType, link: Link) -> None:
    client, server = pair(records, link)
    _, out = client.encrypt(b"x" * 100)
    forged = out[:-1] + bytes([out[-1] ^ 1])  # the AEAD tag no longer matches
    assert server.receive(forged) == (b"", _openssl.FAILED, b"")  # the alert stays in the BIO
    assert any("bad record mac" in text for _code, text in _openssl.errors())
    alert = server.drain()
    assert alert  # bad_record_mac goes to the peer
    assert client.receive(alert)[1] == _openssl.FAILED
    _openssl.errors()
    status, out = server.encrypt(b"after the failure")
    assert (status, out) == (_openssl.FAILED, b"")


def test_records_keep_the_connection_alive(
    records: ModuleType, pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    """The SSL object and BIOs a Records points into stay allocated while it lives."""
    done = established(pki, server_leaf, client_leaf)
    client, server = pair(records, done)
    done.client.release()
    done.server.release()
    del done
    status, out = client.encrypt(b"still here")
    assert status == _openssl.OK
    assert server.receive(out)[:2] == (b"still here", _openssl.WANT_READ)


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=3 * RECORD),
    cuts=st.lists(st.integers(min_value=0, max_value=4 * RECORD), max_size=8),
    turns=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_both_twins_agree_on_any_split_of_the_stream(
    records_c: ModuleType,
    pki: Pki,
    server_leaf: Leaf,
    client_leaf: Leaf,
    data: bytes,
    cuts: list[int],
    turns: list[bool],
) -> None:
    """The same ciphertext, cut at random points, fed chunk by chunk to the compiled or the Python
    twin (chosen at random per chunk) on one connection: the plaintext is what was sent, each
    call ends wanting more, and nothing is produced to send."""
    done = established(pki, server_leaf, client_leaf)
    writer = records_c.Records(done.client._conn)
    readers = {True: records_c.Records(done.server._conn), False: _records_py.Records(done.server._conn)}
    _, wire = writer.encrypt(data)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    received = b""
    for turn, (start, end) in zip(turns, itertools.pairwise(bounds), strict=False):
        plaintext, status, answer = readers[turn].receive(wire[start:end])
        assert (status, answer) == (_openssl.WANT_READ, b"")
        received += plaintext
    assert received == data


# ---------------------------------------------------------------------------- the engine's calls


def test_decrypt_and_encrypt_are_the_two_step_calls_in_one(link: Link) -> None:
    client, server = link.client, link.server
    records_out = client.encrypt(b"ping")
    assert records_out and client.data_to_send() == b""
    assert server.decrypt(bytes(records_out)) == (b"ping", b"")
    client.write(b"pong")
    server.receive_data(bytes(client.data_to_send()))
    assert server.read() == b"pong"


def test_decrypt_completes_a_handshake_then_reads(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    """The client's Finished and its first request in one chunk: handshake and data in one call."""
    server = TlsContext(pki.config(server_leaf, server_side=True)).engine()
    client = TlsContext(pki.config(client_leaf, server_side=False)).engine()
    client.start_handshake()
    server.receive_data(bytes(client.data_to_send()))
    client.receive_data(bytes(server.data_to_send()))
    assert client.handshake_complete and not server.handshake_complete
    chunk = bytes(client.data_to_send()) + bytes(client.encrypt(b"GET / HTTP/1.1\r\n\r\n"))
    request, tickets = server.decrypt(chunk)
    assert request == b"GET / HTTP/1.1\r\n\r\n" and server.handshake_complete
    assert tickets  # a TLS 1.3 server sends its session tickets once it has the client's Finished


def test_a_key_update_through_the_one_call_paths(link: Link) -> None:
    """A KeyUpdate asking for ours, then data: decrypt reads the data on the new keys; OpenSSL
    answers with the next write, so encrypt carries our KeyUpdate ahead of the reply."""
    link.client.key_update()
    update = bytes(link.client.data_to_send()) + bytes(link.client.encrypt(b"after the update"))
    assert link.server.decrypt(update) == (b"after the update", b"")
    reply = bytes(link.server.encrypt(b"reply"))
    assert len(reply) > 2 * 22 + len(b"reply")  # two records: the KeyUpdate, then the data
    assert link.client.decrypt(reply) == (b"reply", b"")


def test_engine_raises_on_a_forged_record_and_stays_failed(link: Link) -> None:
    out = bytes(link.client.encrypt(b"x" * 50))
    with pytest.raises(TlsError) as first:
        link.server.decrypt(out[:-1] + bytes([out[-1] ^ 1]))
    with pytest.raises(TlsError) as again:
        link.server.decrypt(out)
    assert again.value is first.value
    with pytest.raises(TlsError, match="not open for writing"):
        link.server.encrypt(b"reply")


def test_encrypt_refuses_before_the_handshake(pki: Pki, client_leaf: Leaf) -> None:
    engine: TlsEngine = TlsContext(pki.config(client_leaf, server_side=False)).engine()
    with pytest.raises(TlsError, match="not open for writing"):
        engine.encrypt(b"too early")
    assert engine.encrypt(b"") == b""  # nothing to write is no error


# ---------------------------------------------------------------------------- the dispatcher


def test_dispatcher_agrees_with_status() -> None:
    loaded = _ext.extensions_status()["meshproxy.tls._records_c"]
    expected = "meshproxy.tls._records_c" if loaded else "meshproxy.tls._records_py"
    assert records.Records.__module__ == expected


def test_a_missing_openssl_symbol_is_an_import_error_and_the_twin_runs(records_c: ModuleType) -> None:
    """Without SSL_pending in cryptography's binding the compiled module refuses to load, naming
    the symbol, and the dispatcher takes the twin."""
    probe = """
from meshproxy.tls import _openssl
real = _openssl.lib
class Without:
    def __getattr__(self, name):
        if name == "SSL_pending":
            raise AttributeError(name)
        return getattr(real, name)
_openssl.lib = Without()
try:
    import meshproxy.tls._records_c
except ImportError as exc:
    print(exc)
from meshproxy.tls import records
print(records.Records.__module__)
"""
    root = str(Path(_ext.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    env.pop("MESHPROXY_NO_EXTENSIONS", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    error, module = out.stdout.strip().splitlines()
    assert "cryptography's OpenSSL binding has no SSL_pending" in error
    assert module == "meshproxy.tls._records_py"


@settings(max_examples=30, deadline=None)
@given(
    garbage=st.one_of(
        st.binary(max_size=64),
        # a record header (application data, TLS 1.2 on the wire) and a body of any length
        st.builds(
            lambda n, body: b"\x17\x03\x03" + n.to_bytes(2, "big") + body,
            st.integers(0, 20000),
            st.binary(max_size=64),
        ),
        st.builds(
            lambda t, body: bytes([t]) + b"\x03\x03\x00\x10" + body,
            st.integers(0, 255),
            st.binary(min_size=16, max_size=16),
        ),
    )
)
def test_both_twins_answer_garbage_alike(
    records_c: ModuleType, pki: Pki, server_leaf: Leaf, client_leaf: Leaf, garbage: bytes
) -> None:
    """Bytes no peer encrypted, after a handshake, into the compiled twin on one connection and the
    Python twin on another: the same plaintext (none), the same status, an alert of the same size."""
    outcomes = []
    for mod in (records_c, _records_py):
        _, server = pair(mod, established(pki, server_leaf, client_leaf))
        plaintext, status, answer = server.receive(garbage)
        _openssl.errors()  # this connection's failure reasons, not the next one's
        outcomes.append((plaintext, status, len(answer + server.drain())))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == b"" and outcomes[0][1] in (_openssl.WANT_READ, _openssl.FAILED)
