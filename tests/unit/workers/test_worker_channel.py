"""The supervisor-worker channel (``workers/channel.py``) over a real socketpair."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from meshproxy.workers import channel
from meshproxy.workers.channel import Channel, ChannelError


async def pair() -> tuple[Channel, asyncio.StreamReader, asyncio.StreamWriter]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_unix_connection(sock=theirs)
    return Channel(reader, writer), peer_reader, peer_writer


async def test_a_request_gets_its_reply() -> None:
    ch, peer_reader, peer_writer = await pair()

    async def echo() -> None:
        request = await channel.receive(peer_reader)
        await channel.send(peer_writer, ("ok", request))

    task = asyncio.create_task(echo())
    assert await ch.ask(("stats", b"\x00" * 100_000), timeout=5) == ("ok", ("stats", b"\x00" * 100_000))
    await task
    ch.close()
    peer_writer.close()


async def test_a_silent_worker_breaks_the_channel() -> None:
    ch, _, peer_writer = await pair()
    with pytest.raises(ChannelError, match=r"no answer within 0\.05s"):
        await ch.ask(("stats",), timeout=0.05)
    assert ch.broken
    with pytest.raises(ChannelError, match="broken"):
        await ch.ask(("stats",), timeout=5)  # a late reply must not answer the next request
    ch.close()
    peer_writer.close()


async def test_a_worker_gone_is_a_channel_error() -> None:
    ch, _, peer_writer = await pair()
    peer_writer.close()
    with pytest.raises(ChannelError, match="peer gone"):
        await ch.ask(("stats",), timeout=5)
    ch.close()


async def test_a_frame_over_the_limit_is_refused_unread() -> None:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    theirs.sendall(struct.pack(">I", channel.MAX_FRAME + 1))
    with pytest.raises(ChannelError, match="exceeds"):
        await channel.receive(reader)
    writer.close()
    theirs.close()
