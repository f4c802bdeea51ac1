"""JSON access log sinks.

Owns the access-log line format (one JSON object per request or TCP session, the fields
operators expect from Envoy's default format) and the files it goes to. Lines are written into
a buffered file and flushed once a second and at shutdown, never per request.
Must not import the data plane.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from meshproxy.config.model import AccessLog

# The fields of an HTTP access log line, in order; the data plane fills them by position.
HTTP_FIELDS = (
    "start_time",
    "method",
    "path",
    "protocol",
    "authority",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration_ms",
    "upstream_host",
    "upstream_cluster",
    "request_id",
    "downstream_remote_address",
    "user_agent",
    "route_name",
)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Sink:
    """One access-log destination; shared by every listener that names the same path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str]
        if path in ("/dev/stdout", "-"):
            self._file = sys.stdout
            self._owned = False
        else:
            self._file = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
            self._owned = True

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(_dumps(record) + "\n")

    def flush(self) -> None:
        try:
            self._file.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._file.close()


class AccessLogger:
    """The sinks of one filter (http_connection_manager or tcp_proxy)."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def log(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)


class AccessLogs:
    """Every open sink by path, so a config swap reuses open files."""

    def __init__(self) -> None:
        self._sinks: dict[str, Sink] = {}

    def logger(self, configs: tuple[AccessLog, ...]) -> AccessLogger | None:
        if not configs:
            return None
        sinks = []
        for cfg in configs:
            sink = self._sinks.get(cfg.path)
            if sink is None:
                sink = self._sinks[cfg.path] = Sink(cfg.path)
            sinks.append(sink)
        return AccessLogger(sinks)

    def flush(self) -> None:
        for sink in self._sinks.values():
            sink.flush()

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
