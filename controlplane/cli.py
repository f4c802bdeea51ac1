"""The ``controlplane`` command line: ``serve`` the mesh, ``token create`` a bootstrap token.

Owns argument parsing, logging setup, the assembly of the grpc.aio server (ADS, the CA, the
sidecars' inventory reports and the management API, served alike on two ports: plaintext
``--xds-address``, loopback only unless ``--allow-plaintext-remote``, and TLS
``--xds-tls-address`` with the certificate of
`controlplane.serving_tls`), the admin endpoint (``--admin-address``:
``/metrics``, ``/ready``), the Kubernetes injection webhook (``--webhook-address``,
`controlplane.k8s.serve`), the hot-reload task of the config sources (``--mesh``, the embedded
default when omitted, and ``--xds-resources``), or the Kubernetes source instead of the mesh
file (``--kubernetes``: the mesh from the cluster, CSRs authenticated by TokenReview; a source
that fails ends ``serve`` with 1), and their life until SIGINT or SIGTERM. Exit
codes, as ``meshproxy``'s: 0 success, 1 invalid configuration, 2 usage error, 3 cannot bind or
start. ``serve`` prints one line per endpoint when it listens, each ending with the bound
address (port 0 picks a free port, and the line says which); the CA's line comes first, the TLS
port's line last. Every
file flag has a default in the state directory (`controlplane.state_dir`), so ``serve`` alone
starts; the first start that creates the local meshctl's management token prints it, and
where it is, after the gRPC lines.

Must not depend on: the generated protobuf code (the servicers touch it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import cast

import grpc

from controlplane import ca_service, inventory, management, serving_tls, state_dir
from controlplane.admin import AdminServer
from controlplane.app import ControlPlane
from controlplane.ca import CAPolicy, Issuer
from controlplane.ca_service import CertificateAuthorityService, utc_now
from controlplane.ca_store import load_or_create
from controlplane.k8s import serve as k8s_serve
from controlplane.k8s.api import Api
from controlplane.k8s.errors import KubernetesError
from controlplane.k8s.source import KubernetesSource
from controlplane.k8s.tokenreview import TokenReviewAuthenticator
from controlplane.k8s.translate import MeshSettings
from controlplane.k8s.webhook_server import WebhookServer
from controlplane.mesh.model import PqMode, Sidecars
from controlplane.tokens import Authenticator, Grant, TokensFile, append_token, new_token
from controlplane.xds import AdsServer, Ledger, SnapshotCache
from meshproxy.cli import new_event_loop
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.certs import Algorithm

log = logging.getLogger(__name__)

DEFAULT_XDS_ADDRESS = "127.0.0.1:15010"
DEFAULT_XDS_TLS_ADDRESS = "0.0.0.0:15012"  # istiod's port, on every interface: the remote path
DEFAULT_TRUST_DOMAIN = "mesh.local"
STOP_GRACE_SECONDS = 5.0
# --svid-ttl bounds: below 10 s the renewal at half-life would race the one-second file poll;
# above the CA policy's 24 h cap the flag would be clamped anyway.
MIN_SVID_TTL = 10.0
DEFAULT_CA_POLICY = CAPolicy()
MAX_SVID_TTL = DEFAULT_CA_POLICY.max_ttl.total_seconds()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="controlplane", description="meshproxy's control plane: xDS, the CA, the management API"
    )
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve xDS, the CA and the management API over gRPC")
    _state_dir_argument(serve)
    serve.add_argument(
        "--ca-dir", type=Path, help="CA directory, created at first start (default: STATE_DIR/ca)"
    )
    serve.add_argument(
        "--tokens",
        type=Path,
        help="bootstrap tokens file, created empty when missing, re-read when it changes "
        "(default: STATE_DIR/tokens)",
    )
    serve.add_argument(
        "--xds-address",
        default=DEFAULT_XDS_ADDRESS,
        help="HOST:PORT for plaintext gRPC (xDS, the CA, the management API); a loopback address "
        "unless --allow-plaintext-remote",
    )
    serve.add_argument(
        "--allow-plaintext-remote",
        action="store_true",
        help="let --xds-address bind a non-loopback address (bootstrap tokens and xDS would cross "
        "the network in the clear)",
    )
    serve.add_argument(
        "--xds-tls-address",
        default=DEFAULT_XDS_TLS_ADDRESS,
        help="HOST:PORT for the same gRPC over TLS, with a certificate from the CA renewed at "
        f"half-life, or 'off' (default {DEFAULT_XDS_TLS_ADDRESS})",
    )
    serve.add_argument(
        "--xds-tls-san",
        action="append",
        metavar="NAME",
        help="a DNS name (or IP address) sidecars dial the TLS port by; repeat for more (default: "
        "this host's name and localhost; the IP 127.0.0.1 is always in the certificate)",
    )
    serve.add_argument(
        "--mesh",
        type=Path,
        help="mesh config YAML, reloaded when it changes (default: the embedded demo mesh)",
    )
    serve.add_argument(
        "--xds-resources", type=Path, help="raw xDS resources, JSON or YAML (reloaded when it changes)"
    )
    serve.add_argument(
        "--kubernetes",
        action="store_true",
        help="take the mesh from a Kubernetes cluster (Services, EndpointSlices, Pods, Nodes, the "
        "meshproxy.io CRDs) instead of --mesh, and authenticate CSRs with the pods' service-account "
        "tokens (TokenReview) instead of --tokens",
    )
    serve.add_argument(
        "--kubeconfig",
        type=Path,
        help="with --kubernetes: the kubeconfig to reach the API server by (default: the pod's "
        "in-cluster service account)",
    )
    serve.add_argument(
        "--sidecar-cert-dir",
        metavar="DIR",
        help="with --kubernetes: where sidecars keep their SVIDs, '{group}' replaced by the sidecar "
        f"group (default {Sidecars().cert_dir}, the injected pods' volume; a mesh file says it in "
        "sidecars.cert_dir)",
    )
    serve.add_argument(
        "--pq",
        choices=["required", "preferred", "off"],
        help="with --kubernetes: the mesh's post-quantum key exchange (default required; a mesh file "
        "says it in mesh.pq)",
    )
    serve.add_argument(
        "--management-tokens",
        type=Path,
        help="tokens file for the management API (meshctl), created empty when missing (default: "
        "STATE_DIR/management-tokens, created at first start with a token for the local meshctl)",
    )
    serve.add_argument("--admin-address", help="HOST:PORT for /metrics and /ready (off when omitted)")
    serve.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="SPIFFE trust domain of the CA")
    serve.add_argument(
        "--ca-algorithm",
        default=Algorithm.ECDSA_P256.value,
        choices=[a.value for a in Algorithm],
        help="key algorithm of a newly created CA (an existing CA keeps its own)",
    )
    serve.add_argument(
        "--svid-ttl",
        type=float,
        metavar="SECONDS",
        help="lifetime of the SVIDs the CA issues when a CSR asks for none (default 24 h); short "
        "lifetimes (down to 10 s) exercise rotation in tests and demos",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    k8s_serve.add_arguments(serve)
    token = sub.add_parser("token", help="manage bootstrap tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new token and append it to the tokens file")
    _state_dir_argument(create)
    create.add_argument(
        "--tokens", type=Path, help="bootstrap tokens file, created if missing (default: STATE_DIR/tokens)"
    )
    create.add_argument(
        "--identity",
        required=True,
        help="SPIFFE ID the token may obtain, or a prefix ending in '/' (e.g. spiffe://mesh.local/ns/default/sa/)",
    )
    return p


def _state_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help=f"where the defaults below live (default: ${state_dir.ENV}, else $XDG_STATE_HOME/meshproxy, "
        "else ~/.local/state/meshproxy)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = args.state_dir or state_dir.default_location()
    if args.command == "token":
        return _token_create(args.tokens or state / state_dir.TOKENS, args.identity)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every change at INFO
    if args.svid_ttl is not None and not MIN_SVID_TTL <= args.svid_ttl <= MAX_SVID_TTL:
        print(
            f"controlplane: --svid-ttl: {args.svid_ttl:g} is not between "
            f"{MIN_SVID_TTL:g} and {MAX_SVID_TTL:g} seconds",
            file=sys.stderr,
        )
        return 2
    tls_address = None if args.xds_tls_address == "off" else args.xds_tls_address
    for flag, address in (
        ("--xds-address", args.xds_address),
        ("--xds-tls-address", tls_address),
        ("--admin-address", args.admin_address),
        ("--webhook-address", args.webhook_address),
    ):
        if address is not None and not _valid_address(address):
            print(f"controlplane: {flag}: {address!r} is not HOST:PORT", file=sys.stderr)
            return 2
    if not args.allow_plaintext_remote and not _loopback(args.xds_address):
        print(
            f"controlplane: --xds-address: {args.xds_address} is not a loopback address; plaintext gRPC "
            "would carry bootstrap tokens and configuration across the network in the clear. Serve "
            "remote sidecars on --xds-tls-address (TLS, port 15012), or pass --allow-plaintext-remote",
            file=sys.stderr,
        )
        return 2
    if problem := _kubernetes_usage(args):
        print(f"controlplane: {problem}", file=sys.stderr)
        return 2
    cache = SnapshotCache()
    control = ControlPlane(cache, mesh_path=args.mesh, resources_path=args.xds_resources)
    notes: list[str] = []
    try:
        bootstrap_tokens = _tokens_file(args.tokens or state / state_dir.TOKENS)
        tokens = TokensFile(bootstrap_tokens, trust_domain=args.trust_domain)
        admins = TokensFile(
            _management_tokens_file(args.management_tokens, state, args.trust_domain, notes),
            trust_domain=args.trust_domain,
        )
        control.start(mesh=not args.kubernetes)
        ca = load_or_create(
            args.ca_dir or state / state_dir.CA_DIR,
            trust_domain=args.trust_domain,
            now=utc_now(),
            algorithm=Algorithm(args.ca_algorithm),
        )
        issuer = Issuer(ca, _ca_policy(args.svid_ttl))
        serving = (
            serving_tls.ServingCertificate(
                ca,
                serving_tls.parse_sans(args.xds_tls_san or serving_tls.default_sans()),
                ttl=issuer.policy.default_ttl,
                now=utc_now(),
            )
            if tls_address is not None
            else None
        )
        webhook = (
            k8s_serve.webhook(args, ca, issuer.policy.default_ttl, utc_now)
            if args.webhook_address is not None
            else None
        )
    except ConfigError as exc:
        print(
            f"controlplane: invalid configuration, not starting ({len(exc.problems)} problem(s)):",
            file=sys.stderr,
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    ledger = Ledger()
    reports = inventory.InventoryReports()
    loop = new_event_loop()
    api: Api | None = None
    try:
        authenticator: Authenticator = tokens
        source = None
        if args.kubernetes:
            try:
                api = loop.run_until_complete(Api.connect(args.kubeconfig))
            except KubernetesError as exc:
                print(f"controlplane: {exc}", file=sys.stderr)
                return 1
            authenticator = TokenReviewAuthenticator(api, trust_domain=args.trust_domain)
            sidecars = Sidecars(cert_dir=args.sidecar_cert_dir or Sidecars().cert_dir)
            settings = MeshSettings(args.trust_domain, cast(PqMode, args.pq or "required"), sidecars)
            source = KubernetesSource(api, control, settings)
        services = Services(
            ca=CertificateAuthorityService(issuer, authenticator),
            ads=AdsServer(cache, ledger),
            management=management.ManagementService(control, ledger, admins, reports),
            admin=AdminServer(ledger.registry, lambda: control.state is not None),
            inventory=inventory.InventoryReportingService(reports),
            webhook=webhook,
        )
        ports = [(args.xds_address, None)]
        if serving is not None and tls_address is not None:
            ports.append((tls_address, serving_tls.server_credentials(serving, utc_now)))
        addresses = (args.admin_address, args.webhook_address)
        return loop.run_until_complete(_serve(services, control, ports, addresses, notes, source))
    finally:
        if api is not None:
            loop.run_until_complete(api.close())
        loop.close()


def _kubernetes_usage(args: argparse.Namespace) -> str | None:
    """Why the Kubernetes flags do not go together, if they do not."""
    if args.kubernetes and args.mesh is not None:
        return "--mesh and --kubernetes are two sources of the mesh: give one"
    flags = (
        ("--kubeconfig", args.kubeconfig),
        ("--pq", args.pq),
        ("--sidecar-cert-dir", args.sidecar_cert_dir),
    )
    for flag, value in flags:
        if value is not None and not args.kubernetes:
            return f"{flag} applies with --kubernetes only (a mesh file says it itself)"
    return None


def _ca_policy(svid_ttl: float | None) -> CAPolicy:
    """The default policy, or one whose default lifetime is ``svid_ttl`` seconds (its floor
    lowered to match: a CSR asking for a lifetime gets at least that much)."""
    if svid_ttl is None:
        return DEFAULT_CA_POLICY
    ttl = timedelta(seconds=svid_ttl)
    return CAPolicy(default_ttl=ttl, min_ttl=min(ttl, DEFAULT_CA_POLICY.min_ttl))


@dataclass(frozen=True, slots=True)
class Services:
    """Everything ``serve`` runs: three gRPC services on one server, and the admin endpoint."""

    ca: CertificateAuthorityService
    ads: AdsServer
    management: management.ManagementService
    admin: AdminServer
    inventory: inventory.InventoryReportingService
    webhook: WebhookServer | None = None


def _tokens_file(path: Path) -> Path:
    """``path``, created empty when missing (so ``serve`` may come before ``token create``)."""
    try:
        created = state_dir.ensure_tokens_file(path)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the tokens file ({exc})"]) from None
    if created:
        log.info("created the empty tokens file %s (add tokens with 'controlplane token create')", path)
    return path


def _management_tokens_file(explicit: Path | None, state: Path, trust_domain: str, notes: list[str]) -> Path:
    """The management tokens file: ``explicit``, or the state directory's, which is created at
    first use with a token for the local meshctl (announced in ``notes``, this once)."""
    if explicit is not None:
        return _tokens_file(explicit)
    try:
        created = state_dir.ensure_local_operator(state, trust_domain=trust_domain)
    except OSError as exc:
        raise ConfigError([f"{state}: cannot create the state directory ({exc})"]) from None
    except IdentityError as exc:
        raise ConfigError([f"--trust-domain: {exc}"]) from None
    if created is not None:
        notes.append(
            f"controlplane: created a management token for {created.identity}: {created.token}\n"
            f"controlplane: it is in {created.token_file}, where meshctl on this machine finds it"
        )
    return state / state_dir.MANAGEMENT_TOKENS


def _valid_address(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) < 65536)


def _loopback(address: str) -> bool:
    """Whether HOST of HOST:PORT is ``localhost`` or a loopback IP literal (127/8, ::1)."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another name: it may resolve anywhere
        return False


async def _serve(
    services: Services,
    control: ControlPlane,
    ports: list[tuple[str, grpc.ServerCredentials | None]],
    addresses: tuple[str | None, str | None],
    notes: list[str],
    source: KubernetesSource | None = None,
) -> int:
    """Serve on ``ports`` (the plaintext address first, then TLS ones with their credentials),
    and the admin endpoint and the injection webhook on ``addresses`` (either may be None);
    with a Kubernetes ``source``, until it fails too (exit 1: the mesh would go stale)."""
    admin_address, webhook_address = addresses
    # gRPC sets SO_REUSEPORT by default: a second controlplane on the same port would then share
    # it silently instead of failing to start.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    ca_service.add_to_server(services.ca, server)
    services.ads.add_to_server(server)
    management.add_to_server(services.management, server)
    inventory.add_to_server(services.inventory, server)
    bound: list[str] = []
    for address, credentials in ports:
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind to address ...")
            print(f"controlplane: cannot listen on {address}: {exc}", file=sys.stderr)
            if notes:  # a token made for meshctl is announced, once, whatever happens next
                print(*notes, sep="\n", file=sys.stderr)
            return 3
        bound.append(f"{address.rsplit(':', 1)[0]}:{port}")
    await server.start()
    # Before the first "serving" line: a SIGTERM sent as soon as one is read stops in order.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    plain, tls = bound[0], bound[1:]
    host, port = plain.rsplit(":", 1)
    print(f"controlplane: serving the CA on {host}:{port}", flush=True)
    print(f"controlplane: serving xDS (ADS) on {host}:{port}", flush=True)
    print(f"controlplane: serving the management API on {host}:{port}", flush=True)
    if notes:
        print(*notes, sep="\n", flush=True)
    if admin_address:
        admin_host, admin_port = admin_address.rsplit(":", 1)
        try:
            bound_admin = await services.admin.start(admin_host.strip("[]"), int(admin_port))
        except OSError as exc:
            print(f"controlplane: cannot listen on {admin_address}: {exc}", file=sys.stderr)
            await server.stop(None)
            return 3
        print(f"controlplane: serving /metrics and /ready on {admin_host}:{bound_admin}", flush=True)
    if services.webhook is not None and webhook_address:
        webhook_host, webhook_port = webhook_address.rsplit(":", 1)
        try:
            bound_webhook = await services.webhook.start(webhook_host.strip("[]"), int(webhook_port))
        except OSError as exc:
            print(f"controlplane: cannot listen on {webhook_address}: {exc}", file=sys.stderr)
            await services.admin.close()
            await server.stop(None)
            return 3
        print(f"controlplane: serving the injection webhook on {webhook_host}:{bound_webhook}", flush=True)
    for address in tls:
        print(
            f"controlplane: serving xDS (ADS), the CA and the management API over TLS on {address}",
            flush=True,
        )
    tasks = [asyncio.create_task(control.watch_files())]
    if source is not None:
        tasks.append(asyncio.create_task(source.run()))
        tasks[-1].add_done_callback(lambda _: stop.set())
    await stop.wait()
    failed = source is not None and tasks[-1].done() and not tasks[-1].cancelled()
    if failed:
        log.error("the Kubernetes source failed; stopping", exc_info=tasks[-1].exception())
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await services.admin.close()
    if services.webhook is not None:
        await services.webhook.close()
    services.ads.close()  # ADS streams never finish on their own: end them, don't wait the grace out
    await server.stop(STOP_GRACE_SECONDS)
    return 1 if failed else 0


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
