"""``controlplane serve``'s injection-webhook flags, and the webhook they describe.

Owns ``--webhook-address`` (off unless given; ``meshctl install`` passes ``0.0.0.0:15017``),
``--webhook-image`` (the sidecar image injected), ``--kube-version`` (the cluster's
``MAJOR.MINOR``: native sidecars from 1.29, regular containers before; an AdmissionReview does
not carry the API server's version), and building the `WebhookServer` from them with the
controlplane's CA: its serving certificate has the ``--xds-tls-san`` names (the Service's DNS
name), and the trust bundle injected into pods is the CA's certificate.

Must not depend on: grpc, the xDS server.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime, timedelta

from controlplane import serving_tls
from controlplane.k8s.sidecar import NATIVE_SIDECARS, Target
from controlplane.k8s.webhook_server import WebhookServer
from meshproxy.identity import certs

DEFAULT_IMAGE = Target("").image
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(\.\d+)?$")


def kube_version(text: str) -> tuple[int, int]:
    """``1.29``, ``v1.30.2``: (major, minor); argparse's type."""
    m = _VERSION.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Kubernetes version (e.g. 1.29)")
    return int(m.group(1)), int(m.group(2))


def add_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("Kubernetes sidecar injection (docs/kubernetes.md)")
    group.add_argument("--webhook-address", help="HOST:PORT of the HTTPS injection webhook (default off)")
    group.add_argument("--webhook-image", default=DEFAULT_IMAGE, help="the sidecar image it injects")
    group.add_argument(
        "--kube-version",
        type=kube_version,
        default=NATIVE_SIDECARS,
        metavar="MAJOR.MINOR",
        help="the cluster's Kubernetes version: native sidecars from 1.29 (the default)",
    )


def webhook(
    args: argparse.Namespace,
    ca: certs.CertificateAuthority,
    ttl: timedelta,
    clock: Callable[[], datetime],
) -> WebhookServer:
    """The webhook the flags describe (``args.webhook_address`` is set); `ConfigError` if not."""
    sans = args.xds_tls_san or serving_tls.default_sans()
    hosts = serving_tls.parse_sans(sans)
    target = Target(
        trust_bundle=certs.certs_to_pem([ca.cert]).decode(),
        image=args.webhook_image,
        trust_domain=ca.trust_domain,
        controlplane=sans[0],
        kube_version=args.kube_version,
    )
    serving = serving_tls.ServingCertificate(ca, hosts, ttl=ttl, now=clock())
    return WebhookServer(target, serving, clock)
