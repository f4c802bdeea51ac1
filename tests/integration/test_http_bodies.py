"""Streaming request and response bodies through the proxy, and ``Expect: 100-continue``.

Covers uploads (the upstream hashes what arrived) and downloads (the upstream streams
``/bytes/N``), each with content-length and chunked framing, at 0, 1, 64 KiB and 10 MiB;
``Expect: 100-continue`` from curl (an independent client that waits for the interim
response) and from a raw socket that sends its body only after ``100 Continue``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from . import wire
from .harness import proxy_to, run_process
from .upstreams import aiohttp_upstream

SIZES = [0, 1, 64 * 1024, 10 * 1024 * 1024]
FRAMINGS = ["content-length", "chunked"]
_DATA = random.Random(7).randbytes(max(SIZES))


async def _pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("size", SIZES)
async def test_upload_streams_intact(size: int, framing: str) -> None:
    data = _DATA[:size]
    async with aiohttp_upstream() as up, proxy_to(up) as proxy, httpx.AsyncClient(timeout=30) as client:
        content = data if framing == "content-length" else _pieces(data)
        resp = await client.post(proxy.url("/upload"), content=content)
        assert resp.status_code == 200
        assert resp.json() == {"bytes": size, "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("size", SIZES)
async def test_download_streams_intact(size: int, framing: str) -> None:
    query = "?chunked" if framing == "chunked" else ""
    async with aiohttp_upstream() as up, proxy_to(up) as proxy, httpx.AsyncClient(timeout=30) as client:
        received = 0
        async with client.stream("GET", proxy.url(f"/bytes/{size}{query}")) as resp:
            assert resp.status_code == 200
            if framing == "chunked":
                assert resp.headers.get("transfer-encoding") == "chunked"
                assert "content-length" not in resp.headers
            else:
                assert resp.headers.get("content-length") == str(size)
            async for piece in resp.aiter_raw():
                assert piece.count(b"x") == len(piece), "body bytes altered"
                received += len(piece)
        assert received == size


async def test_expect_100_continue_with_curl(tmp_path: pathlib.Path) -> None:
    data = _DATA[: 2 * 1024 * 1024]
    body = tmp_path / "body"
    body.write_bytes(data)
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        # With a 20 s expect timeout curl would wait visibly if no 100 Continue came.
        code, out, err = await run_process(
            "curl", "-sS", "-v", "--http1.1", "--expect100-timeout", "20",
            "-H", "Expect: 100-continue", "-H", "Content-Type: application/octet-stream",
            "--data-binary", f"@{body}", proxy.url("/upload"),
        )  # fmt: skip
    assert code == 0, err.decode()
    assert b"< HTTP/1.1 100 Continue" in err
    assert json.loads(out) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def test_expect_100_continue_body_sent_only_after_interim_response() -> None:
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        head = wire.request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "5")])
        writer.write(head)
        interim = await wire.read_head(reader)
        assert interim.status == 100
        writer.write(b"hello")
        final = await wire.read_response(reader)
        assert final.status == 200, "exactly one interim response, then the final one"
        assert json.loads(final.body)["body_len"] == 5
        # The connection stays usable for the next request.
        writer.write(wire.request("GET", "/echo/next"))
        assert json.loads((await wire.read_response(reader)).body)["path"] == "/echo/next"


async def test_expect_100_continue_is_ignored_for_http10_client() -> None:
    # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored
    # (an HTTP/1.0 client cannot parse an interim response).
    raw = wire.request("POST", "/echo", [("Expect", "100-continue")], b"hello", version="HTTP/1.0")
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(raw)
        first = await wire.read_head(reader)
    assert first.status == 200, f"an HTTP/1.0 client was sent a {first.status}"
