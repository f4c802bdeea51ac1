"""The ``controlplane`` command line: ``serve`` the CA, ``token create`` a bootstrap token.

Owns argument parsing, logging setup, the assembly of the grpc.aio server (today the CA service
alone on ``--xds-address``; the xDS issue adds ADS to the same server) and its life until SIGINT
or SIGTERM. Exit codes, as ``meshproxy``'s: 0 success, 1 invalid configuration, 2 usage error,
3 cannot bind or start. ``serve`` prints one line when it listens, naming the bound address
(port 0 picks a free port, and that line says which).

Must not depend on: the generated protobuf code (only `ca_service` touches it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from controlplane.ca import Issuer
from controlplane.ca_service import CertificateAuthorityService, add_to_server, utc_now
from controlplane.ca_store import load_or_create
from controlplane.tokens import Grant, TokensFile, append_token, new_token
from meshproxy.cli import new_event_loop
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.certs import Algorithm

DEFAULT_XDS_ADDRESS = "127.0.0.1:15010"
DEFAULT_TRUST_DOMAIN = "mesh.local"
STOP_GRACE_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="controlplane", description="meshproxy control plane: CA (and xDS)")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CA (and, later, xDS) over gRPC")
    serve.add_argument(
        "--ca-dir", required=True, type=Path, help="CA state directory (created at first start)"
    )
    serve.add_argument(
        "--tokens", required=True, type=Path, help="bootstrap tokens file (re-read when it changes)"
    )
    serve.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="HOST:PORT to listen on")
    serve.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="SPIFFE trust domain of the CA")
    serve.add_argument(
        "--ca-algorithm",
        default=Algorithm.ECDSA_P256.value,
        choices=[a.value for a in Algorithm],
        help="key algorithm of a newly created CA (an existing CA keeps its own)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    token = sub.add_parser("token", help="manage bootstrap tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token and append it to the tokens file")
    create.add_argument(
        "--tokens", required=True, type=Path, help="bootstrap tokens file (created if missing)"
    )
    create.add_argument(
        "--identity",
        required=True,
        help="SPIFFE ID the token may obtain, or a prefix ending in '/' (e.g. spiffe://mesh.local/ns/default/sa/)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        return _token_create(args.tokens, args.identity)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        tokens = TokensFile(args.tokens, trust_domain=args.trust_domain)
        ca = load_or_create(
            args.ca_dir, trust_domain=args.trust_domain, now=utc_now(), algorithm=Algorithm(args.ca_algorithm)
        )
    except ConfigError as exc:
        print(
            f"controlplane: invalid configuration, not starting ({len(exc.problems)} problem(s)):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    service = CertificateAuthorityService(Issuer(ca), tokens)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_serve(service, args.xds_address))
    finally:
        loop.close()


async def _serve(service: CertificateAuthorityService, address: str) -> int:
    # gRPC sets SO_REUSEPORT by default: a second controlplane on the same port would then share
    # it silently instead of failing to start.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_to_server(service, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind to address ...")
        print(f"controlplane: cannot listen on {address}: {exc}", file=sys.stderr)
        return 3
    await server.start()
    host = address.rsplit(":", 1)[0]
    print(f"controlplane: serving the CA on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(STOP_GRACE_SECONDS)
    return 0


def _token_create(path: Path, identity: str) -> int:
    try:
        grant = Grant.parse(identity)
    except IdentityError as exc:
        print(f"controlplane: --identity: {exc}", file=sys.stderr)
        return 2
    token = new_token()
    try:
        append_token(path, token, grant)
    except OSError as exc:
        print(f"controlplane: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
