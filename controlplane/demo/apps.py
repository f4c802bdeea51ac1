"""The demo's applications and its client: plain HTTP/1.1 on loopback, in the demo's own loop.

Owns ``HelloApp``, the service each version runs (it answers who it is and counts its requests
by the caller identity in the ``x-forwarded-client-cert`` its sidecar set, i.e. who called it
over mutual TLS; a request that did not come through the sidecar counts under ``""``), and
``send``, the client that drives keep-alive traffic into the caller's sidecar and tallies which
version answered. Requests carry no body; a failed request is counted, not raised.

Must not depend on: the proxy or the controlplane (the client talks to them over sockets).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Seen:
    """What one application saw: requests per caller identity its sidecar vouched for, the last XFCC."""

    callers: Counter[str] = field(default_factory=Counter)
    xfcc: str = ""

    @property
    def requests(self) -> int:
        return sum(self.callers.values())


def caller(xfcc: str) -> str:
    """The ``URI`` of the last XFCC element: the one the app's own sidecar added (Envoy appends).

    The demo's identities are plain SPIFFE IDs, so no value here is quoted or holds ``,``/``;``.
    """
    for pair in xfcc.rpartition(",")[2].split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "uri":
            return value.strip()
    return ""


class HelloApp(asyncio.Protocol):
    """A keep-alive HTTP/1.1 server that says which version it is."""

    def __init__(self, version: str, seen: Seen) -> None:
        self.version = version.encode()
        self.seen = seen
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            xfcc = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"x-forwarded-client-cert":
                    xfcc = self.seen.xfcc = value.strip().decode("latin-1")
            self.seen.callers[caller(xfcc)] += 1
            body = b"hello from %b\n" % self.version
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-version: %b\r\n"
                b"content-length: %d\r\n\r\n%b" % (self.version, len(body), body)
            )


async def start_app(version: str, host: str, port: int) -> tuple[asyncio.Server, Seen]:
    seen = Seen()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HelloApp(version, seen), host, port)
    return server, seen


@dataclass
class Tally:
    """Which version answered how many requests; failures with the first error seen."""

    versions: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    first_error: str = ""

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + self.failed

    def fail(self, why: str) -> None:
        self.failed += 1
        self.first_error = self.first_error or why


async def send(host: str, port: int, authority: str, requests: int, connections: int) -> Tally:
    """``requests`` GETs over ``connections`` keep-alive connections (reopened after an error)."""
    tally = Tally()
    share = [requests // connections + (i < requests % connections) for i in range(connections)]
    await asyncio.gather(*(_connection(host, port, authority, iter(range(n)), tally) for n in share))
    return tally


async def send_until(host: str, port: int, authority: str, connections: int, stop: asyncio.Event) -> Tally:
    """GETs over ``connections`` keep-alive connections, each sending the next once it has its
    answer, until ``stop`` is set (the request in flight then completes and is counted)."""
    tally = Tally()
    more = iter(lambda: stop.is_set(), True)  # yields False until stop is set
    await asyncio.gather(*(_connection(host, port, authority, more, tally) for _ in range(connections)))
    return tally


async def _connection(host: str, port: int, authority: str, turns: Iterator[object], tally: Tally) -> None:
    request = f"GET / HTTP/1.1\r\nhost: {authority}\r\nuser-agent: meshproxy-demo\r\n\r\n".encode()
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for _ in turns:
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            reader, writer = conn
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
            await reader.readexactly(int(fields.get("content-length", "0")))
            if status == 200 and "x-version" in fields:
                tally.versions[fields["x-version"]] += 1
            else:
                tally.fail(f"HTTP {status} from the sidecar")
            if fields.get("connection", "").lower() == "close":
                writer.close()
                conn = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            tally.fail(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()
