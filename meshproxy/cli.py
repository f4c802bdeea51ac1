"""The ``meshproxy`` command line: ``run`` a bootstrap, ``validate`` one, ``wait-ready``,
``iptables``, ``tls-probe``, ``version``.

Owns argument parsing, logging setup, the choice of event loop (uvloop when installed,
plain asyncio otherwise) and what ``run`` starts beside the server: the workload identity agent
before it, the status ports (readiness, Prometheus; ``--sidecar``) after it. With
``--concurrency N`` above 1 the server is the worker supervisor (``meshproxy/workers/``). Exit codes:
0 success, 1 invalid configuration (``wait-ready``: not ready in time), 2 usage error,
3 cannot bind or start.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from meshproxy import malloc
from meshproxy.errors import ConfigError, MeshproxyError
from meshproxy.sidecar import command as iptables_command
from meshproxy.sidecar import wait_ready
from meshproxy.sidecar.lifecycle import Termination

if TYPE_CHECKING:
    from meshproxy.config.model import Config
    from meshproxy.server import Server
    from meshproxy.workers.supervisor import Supervisor

GC_GEN0_THRESHOLD = 10_000
# Istio's sidecar ports, served by ``run --sidecar`` unless given.
SIDECAR_READY_PORT = 15021
SIDECAR_PROMETHEUS_PORT = 15090


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available (DESIGN decision 3), else the stdlib loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshproxy", description="post-quantum service-mesh sidecar proxy")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy from an Envoy v3 bootstrap (YAML or JSON)")
    run.add_argument("-c", "--config", required=True, help="bootstrap file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--concurrency",
        type=_workers,
        default=1,
        help="worker processes sharing the listeners (SO_REUSEPORT) under one admin port and one "
        "ADS stream (default 1: a single process; see docs/workers.md)",
    )
    ident = run.add_argument_group(
        "workload identity",
        "obtain this proxy's SVID from the control plane's CA and keep it in --cert-dir (cert.pem, "
        "key.pem, ca.pem), renewed at half-life; the bootstrap names these files",
    )
    ident.add_argument("--ca-address", help="the CA, HOST:PORT (controlplane serve)")
    ident.add_argument("--identity", help="this workload's SPIFFE ID")
    ident.add_argument("--token-file", help="the bootstrap token that authenticates the CSR")
    ident.add_argument("--cert-dir", help="where the SVID, its key and the trust bundle are kept")
    ident.add_argument("--ca-trust", help="CA trust bundle (PEM): reach --ca-address over TLS, verified")
    side = run.add_argument_group(
        "sidecar ports and lifecycle",
        "status ports answer on every interface (the admin stays where the bootstrap puts it); "
        "at SIGTERM inbound listeners drain (gracefully with --sidecar: accepting in drain mode "
        "until callers have gone) while OUTBOUND ones serve until the application has gone: no "
        "traffic for --drain-quiet, or --termination-drain-duration, or a second "
        "SIGTERM/SIGINT, whichever comes first",
    )
    side.add_argument(
        "--sidecar",
        action="store_true",
        help=f"serve Istio's status ports (--ready-port {SIDECAR_READY_PORT} "
        f"--prometheus-port {SIDECAR_PROMETHEUS_PORT} unless given) and drain inbound gracefully",
    )
    side.add_argument(
        "--graceful-inbound-drain",
        action="store_true",
        help="at SIGTERM inbound listeners keep accepting in drain mode until callers have gone "
        "(Envoy's graceful drain; implied by --sidecar)",
    )
    side.add_argument("--ready-port", type=_port, help="serve GET /healthz/ready here (0: any free port)")
    side.add_argument(
        "--prometheus-port", type=_port, help="serve GET /stats/prometheus here (0: any free port)"
    )
    side.add_argument(
        "--termination-drain-duration",
        type=_seconds,
        default=5.0,
        help="longest time listeners keep accepting after SIGTERM (default 5s)",
    )
    side.add_argument(
        "--drain-quiet",
        type=_seconds,
        default=1.0,
        help="after SIGTERM, listeners still accepting drain once they had no traffic for this "
        "long (default 1s)",
    )
    val = sub.add_parser("validate", help="check a bootstrap and report every problem with its field path")
    val.add_argument("-c", "--config", required=True, help="bootstrap file")
    for command in (run, val):
        command.add_argument(
            "--allow-unknown-static-fields",
            action="store_true",
            help="ignore fields the Envoy API does not define, rather than refuse them (Envoy's flag)",
        )
    probe = sub.add_parser("tls-probe", help="handshake with a TLS endpoint and print what was negotiated")
    probe.add_argument("address", help="HOST:PORT")
    probe.add_argument("--cert", help="client certificate chain (PEM) for mutual TLS")
    probe.add_argument("--key", help="client private key (PEM)")
    probe.add_argument("--ca", help="trusted CA bundle (PEM); without it the peer is not verified")
    probe.add_argument("--sni", default="", help="server name to send")
    probe.add_argument("--pq", default="preferred", choices=["preferred", "required", "off"])
    iptables_command.add_parser(sub)
    wait_ready.add_parser(sub)
    version = sub.add_parser(
        "version", help="print the version, Python, event loop, OpenSSL, HTTP/2 codec and extensions in use"
    )
    version.add_argument("--json", action="store_true", help="as JSON (the admin /server_info's fields)")
    return p


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return int(text)


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count (1..1024)")
    return int(text)


def _seconds(text: str) -> float:
    """Seconds as ``5``, ``5s``, ``0.5s`` or ``500ms`` (Istio writes durations as ``5s``)."""
    number, scale = (text[:-2], 0.001) if text.endswith("ms") else (text.removesuffix("s"), 1.0)
    try:
        value = float(number) * scale
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (seconds, e.g. 5, 5s, 500ms)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "iptables":
        return iptables_command.run(args)
    if args.command == "wait-ready":
        return wait_ready.run(args)
    if args.command == "version":
        from meshproxy import build_info

        info = build_info.describe()
        print(json.dumps(info, indent=2) if args.json else build_info.text(info).rstrip("\n"))
        return 0
    if args.command == "tls-probe":
        from meshproxy.tls_probe import probe

        loop = new_event_loop()
        try:
            return loop.run_until_complete(probe(args))
        finally:
            loop.close()
    if args.command == "validate":
        config = _load(args.config, "invalid", args.allow_unknown_static_fields)
        if config is None:
            return 1
        print(f"{args.config}: OK ({len(config.listeners)} listener(s), {len(config.clusters)} cluster(s))")
        return 0

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    identity = (args.ca_address, args.identity, args.token_file, args.cert_dir)
    if (any(identity) or args.ca_trust) and not all(identity):
        print(
            "meshproxy: --ca-address, --identity, --token-file and --cert-dir go together "
            "(--ca-trust needs them)",
            file=sys.stderr,
        )
        return 2
    malloc.limit_arenas()  # before uvloop's resolver threads and grpc's start
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_run(args, identity if all(identity) else None))
    finally:
        loop.close()


def settle_heap() -> None:
    """Everything allocated so far (protobuf descriptors, the compiled config) lives as long as
    the process: keep it out of the collector's way, and collect young objects less often,
    since the request path allocates short-lived containers at a high rate; then hand the pages
    startup freed (decoded protobufs, the YAML tree) back to the kernel."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    malloc.trim()


def status_ports(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """The readiness and Prometheus ports ``run`` serves (None: not served)."""
    if not args.sidecar:
        return args.ready_port, args.prometheus_port
    return (
        SIDECAR_READY_PORT if args.ready_port is None else args.ready_port,
        SIDECAR_PROMETHEUS_PORT if args.prometheus_port is None else args.prometheus_port,
    )


def _load(path: str, verdict: str, allow_unknown_fields: bool) -> Config | None:
    """The compiled bootstrap, or None after printing every problem with its field path: the
    file named once, then one problem a line (a single problem shares the file's line)."""
    from meshproxy.config.bootstrap import load_bootstrap

    try:
        return load_bootstrap(path, allow_unknown_fields=allow_unknown_fields)
    except ConfigError as exc:
        if len(exc.problems) == 1:
            print(f"{path}: {verdict}: {exc.problems[0]}", file=sys.stderr)
        else:
            print(f"{path}: {verdict} ({len(exc.problems)} problems):", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return None


async def _run(args: argparse.Namespace, identity: tuple[str, str, str, str] | None) -> int:
    from meshproxy.admin.status import StatusPorts
    from meshproxy.overload.monitors import raise_nofile_limit

    rotator = None
    if identity is not None:
        # The SVID files must exist before the bootstrap that names them is compiled.
        from meshproxy.identity.agent import start_agent
        from meshproxy.identity.svid_client import SvidError

        ca_address, spiffe_id, token_file, cert_dir = identity
        try:
            trust = Path(args.ca_trust) if args.ca_trust else None
            rotator = await start_agent(ca_address, spiffe_id, Path(token_file), Path(cert_dir), trust)
        except (SvidError, MeshproxyError, OSError) as exc:
            logging.getLogger("meshproxy").error("cannot obtain the workload identity: %s", exc)
            return 3
    config = _load(args.config, "invalid configuration, not starting", args.allow_unknown_static_fields)
    if config is None:
        return 1
    old, new = raise_nofile_limit()  # before the server sizes its descriptor reserve
    if new > old:
        logging.getLogger("meshproxy").info("file descriptor limit raised from %d to %d", old, new)
    termination = Termination(
        args.drain_quiet, args.termination_drain_duration, args.sidecar or args.graceful_inbound_drain
    )
    server: Server | Supervisor
    if args.concurrency > 1:
        from meshproxy.workers.supervisor import Supervisor

        server = Supervisor(config, args.concurrency, termination=termination, log_level=args.log_level)
    else:
        from meshproxy.server import Server

        server = Server(config, termination=termination)
    status = StatusPorts(server.admin, *status_ports(args))
    try:
        await server.start()
        await status.start()
    except OSError as exc:
        logging.getLogger("meshproxy").error("cannot start: %s", exc)
        await server.close()
        return 3
    settle_heap()
    log = logging.getLogger("meshproxy")
    for name, address in server.listener_addresses().items():
        log.info("listener %s ready on %s:%d", name, *address)
    admin = server.admin.address()
    for path in status.servers:
        log.info("status %s on port %d (every interface)", path, status.port(path))
    if admin:
        log.info("admin on http://%s:%d", *admin)
    await server.serve_forever()
    status.close()
    if rotator is not None:
        await rotator.close()
    return 0
