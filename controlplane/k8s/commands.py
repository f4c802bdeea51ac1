"""``meshctl inject``, ``meshctl install`` and ``meshctl uninstall``: Kubernetes, offline.

Owns these commands' flags and output. They talk to no controlplane and no cluster: they print
manifests for ``kubectl apply -f -`` (or ``kubectl delete -f -``).

- ``inject -f FILE`` (``-`` for stdin): the manifests with every workload injected, in order;
  why a workload was not injected goes to stderr (exit 0: the same pod the webhook would admit).
- ``install``: the install manifests; ``--dry-run`` validates them against the Kubernetes
  OpenAPI schemas instead (1.29 to the newest kubernetes-validate ships) and prints the verdict.
- ``uninstall``: the installed objects' names, webhook first.

The cluster's CA: ``--ca-dir``, default ``STATE_DIR/kubernetes-ca``, created by the first
``install`` and reused by the next (so a second install changes nothing); ``inject`` reads its
``ca.crt`` as the trust bundle the sidecars verify the controlplane with (``--trust-bundle``
names another). Exit codes are meshctl's: 0 done, 1 invalid manifests, 2 usage error.

Must not depend on: grpc, the management API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from controlplane import ca_store
from controlplane.ca_service import utc_now
from controlplane.k8s import annotations as names
from controlplane.k8s import install
from controlplane.k8s.errors import InjectionError
from controlplane.k8s.manifests import inject_yaml
from controlplane.k8s.serve import DEFAULT_IMAGE, kube_version
from controlplane.k8s.sidecar import NATIVE_SIDECARS, Target
from meshproxy.errors import ConfigError
from meshproxy.identity.certs import CertificateAuthority

COMMANDS = ("inject", "install", "uninstall")
CA_DIR = "kubernetes-ca"  # in meshctl's state directory
DEFAULT_TRUST_DOMAIN = "mesh.local"


class UsageError(Exception):
    pass


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inject = sub.add_parser("inject", help="inject the sidecar into Kubernetes manifests (offline)")
    inject.add_argument("-f", "--file", required=True, type=Path, help="manifests, YAML ('-' for stdin)")
    inject.add_argument(
        "--namespace", default="default", help="for objects without metadata.namespace (default: default)"
    )
    inject.add_argument(
        "--trust-bundle", type=Path, help="the CA bundle sidecars verify the controlplane with (PEM)"
    )
    inject.add_argument(
        "--controlplane",
        help="the name sidecars reach the controlplane by, and its certificate's "
        "(default: its Service, meshproxy-controlplane.SYSTEM_NAMESPACE.svc)",
    )
    install_cmd = sub.add_parser("install", help="print the manifests that install the mesh")
    install_cmd.add_argument(
        "--dry-run", action="store_true", help="validate them against the Kubernetes schemas instead"
    )
    install_cmd.add_argument("--replicas", type=int, default=1, help="controlplane replicas (default 1)")
    for cmd in (inject, install_cmd):
        cmd.add_argument(
            "--image", default=DEFAULT_IMAGE, help=f"the meshproxy image (default {DEFAULT_IMAGE})"
        )
        cmd.add_argument(
            "--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="the mesh's SPIFFE trust domain"
        )
        cmd.add_argument(
            "--kube-version",
            type=kube_version,
            default=NATIVE_SIDECARS,
            metavar="MAJOR.MINOR",
            help="the cluster's version: native sidecars from 1.29 (the default)",
        )
    uninstall = sub.add_parser("uninstall", help="print the installed objects, for kubectl delete -f -")
    for cmd in (inject, install_cmd):
        cmd.add_argument("--ca-dir", type=Path, help=f"the cluster's CA (default: STATE_DIR/{CA_DIR})")
    for cmd in (inject, install_cmd, uninstall):
        cmd.add_argument(
            "--system-namespace",
            default=names.SYSTEM_NAMESPACE,
            help=f"where the controlplane runs (default {names.SYSTEM_NAMESPACE})",
        )


def run(args: argparse.Namespace, state: Path) -> int:
    try:
        return _run(args, getattr(args, "ca_dir", None) or state / CA_DIR)
    except UsageError as exc:
        print(f"meshctl {args.command}: {exc}", file=sys.stderr)
        return 2
    except InjectionError as exc:
        print(f"meshctl inject: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, ca_dir: Path) -> int:
    if args.command == "inject":
        target = Target(
            trust_bundle=_trust_bundle(args.trust_bundle or ca_dir / ca_store.CERT_FILE),
            image=args.image,
            trust_domain=args.trust_domain,
            controlplane=args.controlplane or names.controlplane_host(args.system_namespace),
            kube_version=args.kube_version,
        )
        result = inject_yaml(_read(args.file), target, args.namespace, str(args.file))
        for warning in result.warnings:
            print(f"meshctl inject: {warning}", file=sys.stderr)
        print(result.yaml(), end="")
        return 0
    if args.command == "uninstall":
        print(yaml.safe_dump_all(install.uninstall(args.system_namespace), sort_keys=False), end="")
        return 0
    if args.replicas < 1:
        raise UsageError(f"--replicas: {args.replicas} is not a number of replicas (1 or more)")
    options = install.Options(
        _ca(ca_dir, args.trust_domain), args.image, args.system_namespace, args.kube_version, args.replicas
    )
    documents = install.manifests(options)
    if not args.dry_run:
        print(yaml.safe_dump_all(documents, sort_keys=False), end="")
        return 0
    return _validate(documents)


def _validate(documents: list[dict[str, object]]) -> int:
    try:  # the optional dependency meshproxy[kubernetes]; only --dry-run needs it
        from controlplane.k8s import validate
    except ImportError as exc:
        raise UsageError(
            f"--dry-run needs kubernetes-validate ({exc}): pip install 'meshproxy[kubernetes]'"
        ) from None
    problems = validate.problems(documents)
    versions = validate.versions()
    for problem in problems:
        print(problem)
    verdict = "INVALID" if problems else "valid"
    print(f"{len(documents)} objects: {verdict} against Kubernetes {versions[0]} to {versions[-1]} (strict)")
    return 1 if problems else 0


def _ca(ca_dir: Path, trust_domain: str) -> CertificateAuthority:
    """The cluster's CA, created by the first install."""
    try:
        return ca_store.load_or_create(ca_dir, trust_domain=trust_domain, now=utc_now())
    except ConfigError as exc:
        raise UsageError("; ".join(exc.problems)) from None


def _trust_bundle(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"--trust-bundle: cannot read {path} ({exc}); run 'meshctl install' first or name the CA's bundle"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"--trust-bundle: {path} holds no PEM certificate")
    return text


def _read(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-f: cannot read {path}: {exc}") from None
