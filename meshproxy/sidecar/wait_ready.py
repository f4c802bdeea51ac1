"""``meshproxy wait-ready``: wait until the sidecar says it is ready, then exit 0.

For an entrypoint wrapper (``meshproxy wait-ready && exec app``: the application starts once its
sidecar has a complete configuration and certificate) and for a startup probe. It polls a
readiness URL (default ``http://127.0.0.1:15021/healthz/ready``) every ``--interval`` seconds:
200 exits 0; at ``--timeout`` it exits 1, saying what it saw last (a status and the first line
of its body, or the connection error); a bad URL or flag exits 2.

It never hangs: each attempt is a one-shot HTTP/1.0 GET on a plain socket whose connect and
every read are bounded by what is left of the attempt (at most ``ATTEMPT`` seconds, never past
the overall deadline), and an answer is read up to ``MAX_ANSWER`` bytes. Must not depend on the
proxy's runtime: it runs in the application's container, often before the proxy is up.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.parse

DEFAULT_URL = "http://127.0.0.1:15021/healthz/ready"
ATTEMPT = 2.0  # seconds one attempt may take
MAX_ANSWER = 4096  # bytes of an answer read (the status line and the start of the body)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "wait-ready",
        help="exit 0 once the proxy is ready (for `meshproxy wait-ready && exec app` or a startup probe)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help=f"the readiness URL (default {DEFAULT_URL})")
    where.add_argument("--port", type=int, help="the readiness port on 127.0.0.1 (path /healthz/ready)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between attempts (default 0.25)")


def run(args: argparse.Namespace) -> int:
    url = args.url or (DEFAULT_URL if args.port is None else f"http://127.0.0.1:{args.port}/healthz/ready")
    try:
        target = _target(url)
    except ValueError as exc:
        print(f"meshproxy wait-ready: --url {url!r}: {exc}", file=sys.stderr)
        return 2
    if args.timeout < 0 or args.interval <= 0:
        print("meshproxy wait-ready: --timeout must be >= 0 and --interval > 0", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while True:
        ready, last = _attempt(target, min(deadline, time.monotonic() + ATTEMPT))
        if ready:
            return 0
        left = deadline - time.monotonic()
        if left <= 0:
            print(
                f"meshproxy wait-ready: {url} not ready after {args.timeout:g}s; last: {last}",
                file=sys.stderr,
            )
            return 1
        time.sleep(min(args.interval, left))


def _target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL; ValueError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("only http:// URLs are supported")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if not parts.hostname:
        raise ValueError("no host")
    return parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _attempt(target: tuple[str, int, str], until: float) -> tuple[bool, str]:
    """One GET: (ready, what was seen). The answer is read until the server closes, until
    ``MAX_ANSWER`` bytes, or until ``until``, whichever comes first, and judged on what came."""
    host, port, path = target
    request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1")
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=max(0.001, until - time.monotonic())) as sock:
            sock.sendall(request)
            while len(answer) < MAX_ANSWER:
                sock.settimeout(max(0.001, until - time.monotonic()))
                try:
                    chunk = sock.recv(MAX_ANSWER - len(answer))
                except TimeoutError:
                    break
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        return False, "connect timed out"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    if not answer:
        return False, "no answer"
    status_line, _, rest = answer.partition(b"\r\n")
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return False, f"not an HTTP answer: {status_line[:80]!r}"
    body = rest.partition(b"\r\n\r\n")[2].split(b"\n", 1)[0].strip()
    seen = f"{fields[1].decode()} {body[:100].decode('latin-1')}".strip()
    return fields[1] == b"200", seen
