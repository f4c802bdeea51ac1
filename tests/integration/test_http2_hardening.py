"""HTTP/2 hardening (issue 12), attacked over raw sockets against a real proxy.

Rapid reset with the resets in the read that opened the streams, and paced (finding 13);
header-count bounds on request headers, trailers and upstream responses (finding 11); a 101 or
an out-of-range status relayed into HTTP/2 (finding 15); request blocks that would corrupt an
HTTP/1.1 head (finding 16); request_timeout, max_connection_duration and
headers_with_underscores (finding 12). The HPACK amplification attack against a child-process
proxy is in ``test_exhaustion_http2.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from h2 import events as ev
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from meshproxy.http2.downstream import H2Downstream

from .h2_client import RawH2
from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy
from .upstreams import aiohttp_upstream, counting_upstream, raw_responder, raw_upstream

SLOW = "/slow"


@contextlib.asynccontextmanager
async def silent_upstream() -> AsyncIterator[tuple[int, list[int]]]:
    """An HTTP/1.1 upstream that reads and never answers; yields its port and a list that grows
    by one per connection accepted (what each started request cost)."""
    accepted: list[int] = []
    never = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        with contextlib.suppress(ConnectionError):
            reader_task = asyncio.ensure_future(reader.read(-1))
            await asyncio.wait(
                [reader_task, asyncio.ensure_future(never.wait())], return_when="FIRST_COMPLETED"
            )
            reader_task.cancel()
        writer.close()

    async with raw_upstream(serve) as port:
        yield port, accepted


def two_cluster_doc(slow_port: int, ok_port: int, **hcm: Any) -> dict[str, Any]:
    return bootstrap(
        [http_listener([route(SLOW, "slow"), route("/", "backend")], **hcm)],
        [cluster("slow", slow_port), cluster("backend", ok_port)],
    )


async def get(
    client: RawH2, path: str = "/", extra: list[tuple[str, str]] | None = None
) -> dict[bytes, bytes]:
    sid = client.request(path, extra=extra)
    await client.flush()
    await client.read_until(lambda _: client.ended(sid) or client.closed)
    return client.headers_of(sid)


def resets_of(client: RawH2, sid: int) -> list[int]:
    return [e.error_code for e in client.events if isinstance(e, ev.StreamReset) and e.stream_id == sid]


# ---------------------------------------------------------------------- rapid reset (finding 13)


async def test_headers_and_resets_in_one_write_open_no_upstream_connection() -> None:
    async with (
        silent_upstream() as (slow, accepted),
        counting_upstream() as (ok, _heads),
        running_proxy(two_cluster_doc(slow, ok)) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        await client.read_until(lambda events: any(isinstance(e, ev.RemoteSettingsChanged) for e in events))
        for _ in range(1000):
            sid = client.request(SLOW, end=False)
            client.h2.reset_stream(sid, ErrorCodes.CANCEL)
        with contextlib.suppress(ConnectionError):
            await client.flush()  # one write: 1,000 HEADERS + RST_STREAM pairs
        await client.read_until(lambda _: client.goaway() is not None)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert proxy.cluster_stats("slow").upstream_cx_total == 0
        assert accepted == []
        assert proxy.http_stats().downstream_rq_too_many_premature_resets == 1
        await client.close()
        other = await RawH2.open(proxy.port())
        assert (await get(other))[b":status"] == b"200"
        await other.close()


async def _paced_attack(port: int, pairs: int, pace: float) -> tuple[int, bool]:
    """HEADERS, then its RST_STREAM in a later write; returns (streams opened, whether the
    proxy ended the connection: a GOAWAY read, or the socket closed or reset under us)."""
    client = await RawH2.open(port)
    opened = 0
    try:
        for _ in range(pairs):
            if client.goaway() is not None or client.closed:
                break
            sid = client.request(SLOW, end=False)
            await client.flush()
            opened += 1
            await asyncio.sleep(pace)  # the attacker's pacing: the HEADERS is read on its own
            client.h2.reset_stream(sid, ErrorCodes.CANCEL)
            await client.flush()
            with contextlib.suppress(TimeoutError):
                await client.read_until(lambda _: client.goaway() is not None, timeout=0.001)
        await client.read_until(lambda _: client.goaway() is not None or client.closed, timeout=5)
    except ConnectionError:
        client.closed = True  # our write or read met the proxy's close
    except TimeoutError:
        pass
    ended = client.closed or client.goaway() is not None
    await client.close()
    return opened, ended


async def test_paced_resets_on_five_connections_are_bounded_and_others_are_served() -> None:
    async with (
        silent_upstream() as (slow, accepted),
        counting_upstream() as (ok, _heads),
        running_proxy(two_cluster_doc(slow, ok)) as proxy,
    ):
        # 4 ms apart: under the 200-per-second rate the old per-interval guard allowed.
        attacks = [asyncio.ensure_future(_paced_attack(proxy.port(), 400, 0.004)) for _ in range(5)]
        good = await RawH2.open(proxy.port())
        served = 0
        while not all(a.done() for a in attacks) and served < 2000:
            assert (await get(good))[b":status"] == b"200"
            served += 1
        results = await asyncio.gather(*attacks)
        await good.close()
        print(
            f"paced: streams opened per connection {[o for o, _ in results]}, "
            f"upstream connections {proxy.cluster_stats('slow').upstream_cx_total}, "
            f"accepted {len(accepted)}, good requests served meanwhile {served}"
        )
        assert all(ended for _, ended in results)
        # Envoy's rule: premature resets reaching half of the first 500 streams close it.
        assert all(opened <= 251 for opened, _ in results)
        assert proxy.cluster_stats("slow").upstream_cx_total <= 5 * 251
        assert proxy.http_stats().downstream_rq_too_many_premature_resets == 5
        assert served > 0


# ---------------------------------------------------------------------- header counts (finding 11)


async def test_more_than_max_headers_count_request_headers_end_the_connection() -> None:
    async with counting_upstream() as (ok, heads):
        doc = bootstrap(
            [http_listener([route("/", "backend")], common_http_protocol_options={"max_headers_count": 20})],
            [cluster("backend", ok)],
        )
        async with running_proxy(doc) as proxy:
            client = await RawH2.open(proxy.port())
            fine = [(f"x-h{i}", "v") for i in range(16)]  # + 4 pseudo-headers = 20
            assert (await get(client, extra=fine))[b":status"] == b"200"
            await get(client, extra=[*fine, ("x-one-more", "v")])
            goaway = client.goaway()
            assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            assert proxy.http_stats().http2_header_overflow == 1
            assert len(heads) == 1  # the refused request never went upstream
            await client.close()


async def test_more_than_max_headers_count_trailers_end_the_connection() -> None:
    async with counting_upstream() as (ok, _heads):
        doc = bootstrap(
            [http_listener([route("/", "backend")], common_http_protocol_options={"max_headers_count": 10})],
            [cluster("backend", ok)],
        )
        async with running_proxy(doc) as proxy:
            client = await RawH2.open(proxy.port())
            sid = client.request("/", end=False)
            client.h2.send_data(sid, b"body")
            client.h2.send_headers(sid, [(b"x-t%d" % i, b"v") for i in range(11)], end_stream=True)
            await client.flush()
            await client.read_until(lambda _: client.goaway() is not None or client.closed)
            goaway = client.goaway()
            assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            assert proxy.http_stats().http2_header_overflow == 1
            await client.close()


# ---------------------------------------------------------------------- upstream statuses (finding 15)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 999 Nine\r\ncontent-length: 2\r\n\r\nno",
    ],
    ids=["101", "999"],
)
async def test_an_upstream_status_http2_cannot_carry_is_502_upe(answer: bytes) -> None:
    async with (
        raw_upstream(raw_responder(lambda _h, _b: answer)) as port,
        running_proxy(bootstrap([http_listener([route("/")])], [cluster("backend", port)])) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        sid = client.request("/")
        await client.flush()
        await client.read_until(lambda _: client.ended(sid) or client.closed)
        statuses = [
            dict(e.headers).get(b":status")
            for e in client.events
            if isinstance(e, (ev.ResponseReceived, ev.InformationalResponseReceived)) and e.stream_id == sid
        ]
        assert statuses == [b"502"]
        assert proxy.cluster_stats().upstream_cx_protocol_error >= 1
        assert (await get(client))[b":status"] == b"502"  # the connection still serves
        await client.close()


# ---------------------------------------------------------------------- malformed blocks (finding 16)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (":method", "GET /internal HTTP/1.1\r\nx: y"),
        (":method", "G T"),
        (":path", "/a b"),
        (":path", "/x#frag"),
        (":path", "no-slash"),
        (":authority", "a@evil"),
        (":authority", "a b"),
        ("x(y)", "1"),
        ("x y", "1"),
    ],
)
async def test_a_malformed_request_block_is_reset_before_any_upstream_work(name: str, value: str) -> None:
    async with (
        counting_upstream() as (ok, heads),
        running_proxy(bootstrap([http_listener([route("/")])], [cluster("backend", ok)])) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        client.h2.config.validate_outbound_headers = False  # send what h2 would refuse to
        sid = client.h2.get_next_available_stream_id()
        fields = {":method": "GET", ":scheme": "http", ":authority": "test", ":path": "/"}
        extra = []
        if name in fields:
            fields[name] = value
        else:
            extra.append((name, value))
        block = [(k.encode(), v.encode()) for k, v in [*fields.items(), *extra]]
        client.h2.send_headers(sid, block, end_stream=True)
        await client.flush()
        await client.read_until(lambda _: client.ended(sid) or client.closed)
        assert resets_of(client, sid) == [ErrorCodes.PROTOCOL_ERROR] or (
            client.goaway() is not None and client.goaway().error_code == ErrorCodes.PROTOCOL_ERROR
        )
        assert heads == []
        assert proxy.http_stats().http2_rx_messaging_error == 1
        await client.close()


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\nb", b"a\x00b"])
async def test_a_header_value_with_cr_lf_or_nul_never_crosses(value: bytes) -> None:
    async with (
        counting_upstream() as (ok, heads),
        running_proxy(bootstrap([http_listener([route("/")])], [cluster("backend", ok)])) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        client.h2.config.validate_outbound_headers = False
        client.h2.config.normalize_outbound_headers = False
        sid = client.h2.get_next_available_stream_id()
        block = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"t"),
            (b":path", b"/"),
            (b"x-v", value),
        ]
        client.h2.send_headers(sid, block, end_stream=True)
        await client.flush()
        await client.read_until(lambda _: client.goaway() is not None or client.closed)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR
        assert heads == []
        await client.close()


# ---------------------------------------------------------------------- timeouts, underscores (finding 12)


async def test_request_timeout_answers_408_and_ends_the_stream() -> None:
    async with (
        silent_upstream() as (slow, _accepted),
        counting_upstream() as (ok, _heads),
        running_proxy(two_cluster_doc(slow, ok, request_timeout="1s")) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        sid = client.request(SLOW, end=False)  # the body never comes
        await client.flush()
        await client.read_until(lambda _: client.ended(sid), timeout=5)
        assert client.headers_of(sid)[b":status"] == b"408"
        assert proxy.http_stats().downstream_rq_timeout == 1
        assert (await get(client))[b":status"] == b"200"
        await client.close()


async def test_max_connection_duration_sends_goaway_and_closes() -> None:
    async with counting_upstream() as (ok, _heads):
        doc = bootstrap(
            [http_listener([route("/")], common_http_protocol_options={"max_connection_duration": "1s"})],
            [cluster("backend", ok)],
        )
        async with running_proxy(doc) as proxy:
            client = await RawH2.open(proxy.port())
            assert (await get(client))[b":status"] == b"200"
            await client.read_until(lambda _: client.closed, timeout=5)
            goaway = client.goaway()
            assert goaway is not None and goaway.error_code == ErrorCodes.NO_ERROR
            assert proxy.http_stats().downstream_cx_max_duration_reached == 1


def _underscore_doc(port: int, action: str) -> dict[str, Any]:
    protocol = {"headers_with_underscores_action": action}
    return bootstrap(
        [http_listener([route("/")], common_http_protocol_options=protocol)], [cluster("backend", port)]
    )


async def test_headers_with_underscores_reject_request_resets_the_stream() -> None:
    async with (
        counting_upstream() as (ok, heads),
        running_proxy(_underscore_doc(ok, "REJECT_REQUEST")) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        sid = client.request("/", extra=[("x_user", "admin")])
        await client.flush()
        await client.read_until(lambda _: client.ended(sid))
        assert resets_of(client, sid) == [ErrorCodes.PROTOCOL_ERROR]
        assert heads == []
        assert proxy.http_stats().requests_rejected_with_underscores_in_headers == 1
        assert (await get(client, extra=[("x-user", "a")]))[b":status"] == b"200"
        await client.close()


async def test_headers_with_underscores_drop_header_drops_and_counts() -> None:
    async with counting_upstream() as (ok, heads), running_proxy(_underscore_doc(ok, "DROP_HEADER")) as proxy:
        client = await RawH2.open(proxy.port())
        headers = await get(client, extra=[("x_user", "admin"), ("x-kept", "1"), ("y_z", "2")])
        assert headers[b":status"] == b"200"
        assert len(heads) == 1 and b"x_user" not in heads[0] and b"y_z" not in heads[0]
        assert b"x-kept: 1" in heads[0]
        assert proxy.http_stats().dropped_headers_with_underscores == 2
        await client.close()


async def test_headers_with_underscores_are_allowed_by_default() -> None:
    async with counting_upstream() as (ok, heads), running_proxy(_underscore_doc(ok, "ALLOW")) as proxy:
        client = await RawH2.open(proxy.port())
        assert (await get(client, extra=[("x_user", "a")]))[b":status"] == b"200"
        assert b"x_user: a" in heads[0]
        await client.close()


# ---------------------------------------------------------------------- buffers (finding 7)


async def test_a_reset_streams_queued_response_is_released_at_once() -> None:
    size, streams = 256 * 1024, 3  # 768 KiB: within the listener's 1 MiB buffer limit
    async with (
        aiohttp_upstream() as port,
        running_proxy(bootstrap([http_listener([route("/")])], [cluster("backend", port)])) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})  # a client that never reads
        sids = [client.request(f"/bytes/{size}") for _ in range(streams)]
        await client.flush()
        await client.read_until(lambda _: all(client.headers_of(s) for s in sids))
        conn = next(c for c in proxy.server.listeners["http"].connections if isinstance(c, H2Downstream))
        await eventually(
            lambda: sum(s.down.pending() for s in conn.streams.values()) == size * streams,
            what="the responses queued in the proxy",
        )
        for sid in sids:
            client.h2.reset_stream(sid, ErrorCodes.CANCEL)
        client.h2.ping(b"released")
        await client.flush()
        await client.read_until(lambda events: any(isinstance(e, ev.PingAckReceived) for e in events))
        assert not conn.streams
        # Nothing of theirs is held for a WINDOW_UPDATE that may never come.
        assert sum(h.pending() for h in conn.waiting.values()) == 0 and not conn.waiting
        await client.close()


async def test_http1_upstreams_of_one_connection_share_its_buffer_limit() -> None:
    limit, streams, size = 256 * 1024, 32, 2 * 1024 * 1024
    listener = http_listener([route("/")])
    listener["per_connection_buffer_limit_bytes"] = limit
    async with (
        aiohttp_upstream() as port,
        running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy,
    ):
        client = await RawH2.open(proxy.port())
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})  # a client that never reads
        sids = [client.request(f"/bytes/{size}") for _ in range(streams)]
        await client.flush()
        await client.read_until(lambda _: all(client.headers_of(s) for s in sids))
        conn = next(c for c in proxy.server.listeners["http"].connections if isinstance(c, H2Downstream))

        def paused() -> bool:  # every upstream stopped reading: nothing more can arrive
            ups = [s.up.upstream for s in conn.streams.values() if s.up is not None]
            return len(ups) == streams and all(u is not None and u.reading_paused for u in ups)

        await eventually(paused, timeout=10, what="every upstream paused")
        held = sum(s.down.pending() for s in conn.streams.values())
        print(f"held by one connection: {held / 2**20:.2f} MiB, {streams} streams, limit {limit >> 10} KiB")
        # Each stream: its share (here the 64 KiB floor) plus at most one socket read (256 KiB).
        assert held <= streams * (64 + 256) * 1024
        assert held < streams * 1024 * 1024  # what each stream held at the cluster's limit
        await client.close()
