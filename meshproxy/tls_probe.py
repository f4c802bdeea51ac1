"""``meshproxy tls-probe``: the negotiated parameters of a live TLS link, from outside.

Owns a one-shot client handshake with the proxy's own TLS stack (so it speaks X25519MLKEM768 and
ML-DSA exactly as a sidecar does) and a human-readable report of what was settled, or of why
the handshake was refused; over QUIC with ``--quic`` (``quic/probe.py``). Exit status: 0
negotiated, 1 refused, 2 bad arguments, 3 no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from meshproxy.errors import ConfigError
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.context import TlsContext
from meshproxy.tls.engine import Negotiated
from meshproxy.tls.errors import TlsError
from meshproxy.tls.policy import named
from meshproxy.tls.transport import connect_tls


async def probe(args: argparse.Namespace) -> int:
    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        print(f"tls-probe: {args.address!r} is not HOST:PORT", file=sys.stderr)
        return 2
    try:
        cfg = TlsConfig(
            server_side=False,
            certificate_chain=Path(args.cert).read_bytes() if args.cert else b"",
            private_key=Path(args.key).read_bytes() if args.key else b"",
            trusted_ca=Path(args.ca).read_bytes() if args.ca else None,
            pq_policy=named(args.pq, "--pq"),
            sni=args.sni,
        )
        tls = TlsContext(cfg)
    except (ConfigError, OSError) as exc:
        print(f"tls-probe: {exc}", file=sys.stderr)
        return 2
    try:
        n = await (_quic(host, int(port), cfg) if args.quic else _tcp(host, int(port), tls))
    except TlsError as exc:
        print(f"{args.address}: refused: {exc.reason}")
        return 1
    except TimeoutError:
        print(f"{args.address}: no answer over {'QUIC' if args.quic else 'TCP'}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"{args.address}: cannot connect: {exc.strerror or exc}", file=sys.stderr)
        return 3
    peer = next((u for u in n.peer_uris if u.startswith("spiffe://")), None)
    rows = [
        ("version", n.version),
        ("group", n.group),
        ("cipher", n.cipher),
        ("peer signature", n.peer_signature or "-"),
        ("peer identity", peer or "-"),
        ("peer certificate", n.peer_chain[0].subject.rfc4514_string() if n.peer_chain else "-"),
        ("ALPN", n.alpn or "-"),
        ("resumed", "yes" if n.resumed else "no"),
    ]
    print(f"{args.address}{' (QUIC)' if args.quic else ''}:")
    for name, value in rows:
        print(f"  {name:17s}{value}")
    return 0


async def _tcp(host: str, port: int, tls: TlsContext) -> Negotiated:
    loop = asyncio.get_running_loop()
    transport, _ = await connect_tls(loop, host.strip("[]"), port, tls, asyncio.Protocol)
    transport.close()
    negotiated: Negotiated = transport.get_extra_info("tls")
    return negotiated


async def _quic(host: str, port: int, cfg: TlsConfig) -> Negotiated:
    # aioquic loads only for --quic.
    from meshproxy.quic.probe import quic_handshake

    return await quic_handshake(host.strip("[]"), port, cfg)
