"""The small HTTP/1.1 server under the admin port and the status ports (15021, 15090).

Owns one connection's turn: parse a request (httptools), hand its method and target to a
handler, write the handler's answer (no body for HEAD), keep the connection or close it. It is
bounded so that these ports answer when the data plane is overloaded and cannot be used to
hold the proxy's memory or descriptors: a request head or body larger than ``MAX_REQUEST``
bytes is answered 431 and the connection closed, and a connection that has not delivered a
complete request within ``REQUEST_TIMEOUT`` seconds (of connecting, or of its previous answer)
is closed. A client that stops reading its answers is cut off: once the transport's write buffer
passes its high-water mark, reading pauses, and a further complete request closes the
connection (so the buffer holds at most one answer more). A handler may answer later (an
awaitable: the worker supervisor's admin asks its workers first); reading pauses meanwhile, and
a request pipelined behind it closes the connection after that answer. An answer may carry extra
headers (``method_not_allowed``: a 405 names the methods the path takes in ``Allow``). Must not
depend on the data plane (listeners, HCM, overload admission): these connections bypass all of
it on purpose.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from meshproxy.http import codec

log = logging.getLogger("meshproxy.admin")

# Bytes one request may take (request line, headers and body together).
MAX_REQUEST = 16 * 1024
# Seconds a connection is given to deliver each complete request.
REQUEST_TIMEOUT = 10.0

# Extra response headers an answer may carry (``Allow`` on a 405).
Headers = list[tuple[bytes, bytes]]
# (method, target) → (status, body, content type[, extra headers]), now or later
Answer = tuple[int, bytes, bytes] | tuple[int, bytes, bytes, Headers]
Handler = Callable[[bytes, str], Answer | Awaitable[Answer]]


class Endpoint(asyncio.Protocol):
    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.received = 0  # bytes of the request being read
        self.timer: asyncio.TimerHandle | None = None
        self.writing_paused = False
        self.later: asyncio.Task[None] | None = None  # an answer being awaited
        self.close_after = False  # a request came pipelined behind it
        # Set by connection_made before any other callback; not Optional, so no check per use.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # see the comment above

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_server's
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.transport.resume_reading()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self.transport.close)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_REQUEST:
            self._refuse(431, b"request too large\n")
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"upgrade is not supported here\n")
        except httptools.HttpParserError:
            self._refuse(400, b"bad request\n")

    def _refuse(self, status: int, body: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(codec.local_reply(status, body, close=True))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        if self.later is not None:  # pipelined behind an answer still to come
            self.close_after = True
            return
        if self.writing_paused:  # pipelined requests from a client that does not read
            self.transport.close()
            return
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        try:
            answer = self.handle(method, self.url.decode("latin-1"))
        except Exception:  # a handler bug must not take the proxy down
            log.exception("handler failed for %s", self.url)
            answer = 500, b"internal error\n", b"text/plain"
        if inspect.isawaitable(answer):
            self.transport.pause_reading()
            self.later = asyncio.get_running_loop().create_task(self._answer_later(answer, method, keep))
            return
        self._answer(answer, method, keep)

    async def _answer_later(self, answer: Awaitable[Answer], method: bytes, keep: bool) -> None:
        try:
            result = await answer
        except Exception:
            log.exception("handler failed for %s", self.url)
            result = 500, b"internal error\n", b"text/plain"
        self.later = None
        if self.transport.is_closing():
            return
        self._answer(result, method, keep and not self.close_after)
        if not self.writing_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _answer(self, answer: Answer, method: bytes, keep: bool) -> None:
        status, body, ctype = answer[:3]
        extra = answer[3] if len(answer) == 4 else None
        self.transport.write(
            codec.local_reply(
                status, body, close=not keep, extra=extra, content_type=ctype, head_only=method == b"HEAD"
            )
        )
        self.url = b""
        self.received = 0
        if keep:
            self._arm()
        else:
            self.transport.close()


def method_not_allowed(*allowed: bytes) -> Answer:
    """405 with the ``Allow`` header RFC 9110 (15.5.6) requires: the methods the path takes."""
    methods = b", ".join(allowed)
    return 405, b"use " + b" or ".join(allowed) + b"\n", b"text/plain", [(b"allow", methods)]


def json_answer(obj: Any) -> Answer:
    return 200, json.dumps(obj, indent=2, default=str).encode() + b"\n", b"application/json"
