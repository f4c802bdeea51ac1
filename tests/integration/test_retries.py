"""Route retry policies against upstreams that fail on purpose: 5xx, reset, refused
connections and hangs; the retry lands on another host, bodies are replayed, and the
retry breaker and buffer bound stop retries when they must."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from .harness import bootstrap, cluster, free_port, http_listener, route, running_proxy
from .upstreams import raw_upstream, read_request

Answer = Callable[[bytes, bytes], bytes | None]  # None: close the connection without answering


@contextlib.asynccontextmanager
async def scripted(
    answer: Answer, hang: bool = False
) -> AsyncIterator[tuple[int, list[tuple[bytes, bytes]]]]:
    """An upstream recording each request (head, body) and answering with ``answer``."""
    seen: list[tuple[bytes, bytes]] = []
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for _ in range(1000):
                head, body = await read_request(reader)
                seen.append((head, body))
                if hang:
                    await release.wait()
                reply = answer(head, body)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        writer.close()

    async with raw_upstream(serve) as port:
        try:
            yield port, seen
        finally:
            release.set()


def ok(head: bytes, body: bytes) -> bytes:
    payload = b"ok:" + body
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(payload), payload)


def status(code: int) -> Answer:
    return lambda head, body: b"HTTP/1.1 %d X\r\ncontent-length: 4\r\n\r\nfail" % code


def attempt_count(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"x-envoy-attempt-count":
            return int(value)
    return None


def doc(ports: list[int], retry_policy: dict[str, Any] | None, **cluster_extra: Any) -> dict[str, Any]:
    action: dict[str, Any] = {}
    if retry_policy is not None:
        action["retry_policy"] = retry_policy
    return bootstrap([http_listener([route(**action)])], [cluster("backend", *ports, **cluster_extra)])


RETRY_5XX = {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.001s"}}


async def test_5xx_is_retried_on_the_other_host() -> None:
    async with (
        scripted(status(503)) as (bad, bad_seen),
        scripted(ok) as (good, good_seen),
        running_proxy(doc([bad, good], RETRY_5XX)) as proxy,
    ):
        async with httpx.AsyncClient() as client:
            codes = [(await client.get(proxy.url("/x"))).status_code for _ in range(10)]
        stats = proxy.cluster_stats()
    assert codes == [200] * 10
    # Round robin sends half the first attempts to the failing host; each is retried elsewhere.
    assert len(bad_seen) >= 3
    assert stats.upstream_rq_retry == len(bad_seen)
    retried = [attempt_count(h) for h, _ in good_seen]
    assert retried.count(2) == len(bad_seen)
    assert all(attempt_count(h) == 1 for h, _ in bad_seen)


async def test_without_a_policy_the_5xx_passes_through() -> None:
    async with scripted(status(503)) as (bad, seen), running_proxy(doc([bad], None)) as proxy:
        async with httpx.AsyncClient() as client:
            r = await client.get(proxy.url())
        assert proxy.cluster_stats().upstream_rq_retry == 0
    assert r.status_code == 503 and r.text == "fail"
    assert len(seen) == 1 and attempt_count(seen[0][0]) is None


async def test_retries_stop_at_num_retries_and_return_the_last_response() -> None:
    async with scripted(status(502)) as (bad, seen), running_proxy(doc([bad], RETRY_5XX)) as proxy:
        async with httpx.AsyncClient() as client:
            r = await client.get(proxy.url())
        assert proxy.cluster_stats().upstream_rq_retry == 2
    assert r.status_code == 502
    assert [attempt_count(h) for h, _ in seen] == [1, 2, 3]


async def test_a_post_body_is_replayed_on_retry() -> None:
    async with (
        scripted(status(503)) as (bad, _),
        scripted(ok) as (good, good_seen),
        running_proxy(doc([bad, good], RETRY_5XX)) as proxy,
        httpx.AsyncClient() as client,
    ):
        bodies = [(await client.post(proxy.url(), content=b"payload-%d" % i)).text for i in range(6)]
    assert bodies == ["ok:payload-%d" % i for i in range(6)]
    assert sorted(b for _, b in good_seen) == sorted(b"payload-%d" % i for i in range(6))


async def test_a_body_over_the_buffer_limit_is_not_retried() -> None:
    policy = {**RETRY_5XX}
    async with scripted(status(503)) as (bad, seen):
        d = doc([bad], policy)
        d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "route_config"
        ]["virtual_hosts"][0]["routes"][0]["per_request_buffer_limit_bytes"] = 1024
        async with running_proxy(d) as proxy:
            async with httpx.AsyncClient() as client:
                r = await client.post(proxy.url(), content=b"x" * 4096)
            assert proxy.cluster_stats().upstream_rq_retry == 0
    assert r.status_code == 503 and len(seen) == 1


async def test_connect_failure_is_retried() -> None:
    closed = free_port()
    policy = {"retry_on": "connect-failure", "num_retries": 1, "retry_back_off": {"base_interval": "0.001s"}}
    async with scripted(ok) as (good, _), running_proxy(doc([closed, good], policy)) as proxy:
        async with httpx.AsyncClient() as client:
            codes = [(await client.get(proxy.url())).status_code for _ in range(6)]
        stats = proxy.cluster_stats()
    assert codes == [200] * 6
    assert stats.upstream_cx_connect_fail >= 1
    assert stats.upstream_rq_retry == stats.upstream_cx_connect_fail


async def test_reset_before_headers_is_retried() -> None:
    policy = {"retry_on": "reset", "num_retries": 1, "retry_back_off": {"base_interval": "0.001s"}}
    async with (
        scripted(lambda h, b: None) as (resetting, _),
        scripted(ok) as (good, _),
        running_proxy(doc([resetting, good], policy)) as proxy,
    ):
        async with httpx.AsyncClient() as client:
            codes = [(await client.get(proxy.url())).status_code for _ in range(6)]
        assert proxy.cluster_stats().upstream_rq_retry >= 1
    assert codes == [200] * 6


async def test_per_try_timeout_moves_a_hung_request_to_another_host() -> None:
    policy = {
        "retry_on": "5xx",
        "num_retries": 1,
        "per_try_timeout": "0.2s",
        "retry_back_off": {"base_interval": "0.001s"},
    }
    async with (
        scripted(ok, hang=True) as (hung, hung_seen),
        scripted(ok) as (good, _),
        running_proxy(doc([hung, good], policy)) as proxy,
    ):
        async with httpx.AsyncClient(timeout=5) as client:
            codes = [(await client.get(proxy.url())).status_code for _ in range(4)]
        stats = proxy.cluster_stats()
    assert codes == [200] * 4
    assert stats.upstream_rq_per_try_timeout == len(hung_seen) >= 1


async def test_retriable_status_codes() -> None:
    policy = {
        "retry_on": "retriable-status-codes",
        "retriable_status_codes": [418],
        "num_retries": 1,
        "retry_back_off": {"base_interval": "0.001s"},
    }
    async with (
        scripted(status(418)) as (teapot, _),
        scripted(ok) as (good, _),
        running_proxy(doc([teapot, good], policy)) as proxy,
        httpx.AsyncClient() as client,
    ):
        codes = [(await client.get(proxy.url())).status_code for _ in range(4)]
    assert codes == [200] * 4


async def test_the_retry_breaker_caps_retries() -> None:
    breakers = {"thresholds": [{"max_retries": 0}]}
    async with (
        scripted(status(503)) as (bad, seen),
        running_proxy(doc([bad], RETRY_5XX, circuit_breakers=breakers)) as proxy,
    ):
        async with httpx.AsyncClient() as client:
            r = await client.get(proxy.url())
        stats = proxy.cluster_stats()
    assert r.status_code == 503 and len(seen) == 1
    assert stats.upstream_rq_retry == 0 and stats.upstream_rq_retry_overflow == 1
