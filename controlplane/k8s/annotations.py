"""The ``meshproxy.io/`` annotations and labels, and the Kubernetes names the mesh agrees on.

Owns every name a user or another part of the mesh writes on a Kubernetes object, what each
value means, and how a workload's values are read (`Settings`, with every bad value reported at
once, naming the annotation). One namespace, ``meshproxy.io/``:

Labels (selectors can only see labels, so the switches are labels):

- ``meshproxy.io/inject`` on a **namespace**: ``enabled`` opts every pod in it in (the webhook's
  ``namespaceSelector``), ``disabled`` opts it out even of pods that ask;
- ``meshproxy.io/inject`` on a **pod** (template): ``"true"`` injects it in a namespace that did
  not opt in, ``"false"`` never injects it (also honoured as an annotation).

Annotations a user writes on a pod (template), all optional:

=====================================  ==============================================================
``meshproxy.io/group``                 the sidecar group (the bootstrap's ``node.cluster``); default
                                       `sidecar_group`'s ``<app>[-<version>].<namespace>``
``meshproxy.io/pq``                    ``required`` | ``preferred`` | ``off``: this workload's
                                       post-quantum key exchange (the mesh's when absent)
``meshproxy.io/concurrency``           worker processes, 1-64 (``meshproxy run --concurrency``)
``meshproxy.io/exclude-inbound-ports`` local ports never captured, ``8081,9000`` (15021 and 15090
                                       always are)
``meshproxy.io/exclude-outbound-ports`` destination ports never captured
``meshproxy.io/exclude-inbound-cidrs`` sources never captured, ``10.0.0.0/8,fd00::/8``
``meshproxy.io/exclude-outbound-cidrs`` destinations never captured
``meshproxy.io/cni``                   ``"true"``: a CNI plugin installs the capture, so no
                                       ``meshproxy iptables`` init container (and no NET_ADMIN)
``meshproxy.io/proxy-cpu``,            the sidecar's resource requests (Kubernetes quantities)
``meshproxy.io/proxy-memory``
``meshproxy.io/proxy-cpu-limit``,      the sidecar's resource limits
``meshproxy.io/proxy-memory-limit``
=====================================  ==============================================================

Annotations the injector writes (never by hand): ``meshproxy.io/status`` (what was injected:
the marker that makes injection idempotent), ``meshproxy.io/bootstrap`` (the sidecar's Envoy
bootstrap, JSON) and ``meshproxy.io/trust-bundle`` (the CA's PEM bundle the sidecar verifies
the controlplane with); a downward-API volume turns the last two into files in the pod.

The shared names: the controlplane runs in `SYSTEM_NAMESPACE` behind the Service
`CONTROLPLANE_SERVICE` (xDS and CA over TLS on `XDS_TLS_PORT`, the webhook on `WEBHOOK_PORT`);
a sidecar authenticates to the CA with a projected service-account token whose audience is
`TOKEN_AUDIENCE`, and its SPIFFE ID is `spiffe_id`'s ``spiffe://<td>/ns/<ns>/sa/<sa>``.

Must not depend on: a Kubernetes client, grpc, asyncio, the injector.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar, cast, get_args

from controlplane.k8s.errors import AnnotationError
from meshproxy.sidecar.errors import CaptureError
from meshproxy.sidecar.iptables import parse_cidrs, parse_ports

PREFIX = "meshproxy.io/"

# ----------------------------------------------------------------------------- labels
INJECT = PREFIX + "inject"
NAMESPACE_ENABLED, NAMESPACE_DISABLED = "enabled", "disabled"

# ----------------------------------------------------------------------------- user annotations
GROUP = PREFIX + "group"
PQ = PREFIX + "pq"
CONCURRENCY = PREFIX + "concurrency"
EXCLUDE_INBOUND_PORTS = PREFIX + "exclude-inbound-ports"
EXCLUDE_OUTBOUND_PORTS = PREFIX + "exclude-outbound-ports"
EXCLUDE_INBOUND_CIDRS = PREFIX + "exclude-inbound-cidrs"
EXCLUDE_OUTBOUND_CIDRS = PREFIX + "exclude-outbound-cidrs"
CNI = PREFIX + "cni"
PROXY_CPU = PREFIX + "proxy-cpu"
PROXY_MEMORY = PREFIX + "proxy-memory"
PROXY_CPU_LIMIT = PREFIX + "proxy-cpu-limit"
PROXY_MEMORY_LIMIT = PREFIX + "proxy-memory-limit"

# ----------------------------------------------------------------------------- injector's annotations
STATUS = PREFIX + "status"
BOOTSTRAP = PREFIX + "bootstrap"
TRUST_BUNDLE = PREFIX + "trust-bundle"

# ----------------------------------------------------------------------------- shared names
SYSTEM_NAMESPACE = "meshproxy-system"
CONTROLPLANE_SERVICE = "meshproxy-controlplane"
XDS_TLS_PORT = 15012
WEBHOOK_PORT = 15017
TOKEN_AUDIENCE = "meshproxy-controlplane"
SIDECAR_UID = 1337
APP_LABELS = ("app.kubernetes.io/name", "app")  # the first present names the workload
VERSION_LABELS = ("app.kubernetes.io/version", "version")

PqPolicy = Literal["required", "preferred", "off"]
T = TypeVar("T")
MAX_CONCURRENCY = 64
# Kubernetes' resource.Quantity syntax (apimachinery's quantity.go).
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(\d+(\.\d*)?|\.\d+)))?$")
# A sidecar group is a bootstrap node.cluster: printable, no spaces, bounded.
_GROUP = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Settings:
    """A workload's choices, read from its annotations; ``None``/empty means the default."""

    group: str | None = None
    pq: PqPolicy | None = None
    concurrency: int = 1
    cni: bool = False
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_inbound_cidrs: tuple[str, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    requests: tuple[tuple[str, str], ...] = ()  # (resource, quantity), e.g. ("cpu", "100m")
    limits: tuple[tuple[str, str], ...] = ()


def read_settings(annotations: Mapping[str, str]) -> Settings:
    """The workload's `Settings`, or `AnnotationError` listing every bad value by annotation."""
    r = _Reader(annotations)
    settings = Settings(
        group=r.get(GROUP, _group, None),
        pq=r.get(PQ, _pq, None),
        concurrency=r.get(CONCURRENCY, _concurrency, 1),
        cni=r.get(CNI, _boolean, False),
        exclude_inbound_ports=r.get(EXCLUDE_INBOUND_PORTS, _ports, ()),
        exclude_outbound_ports=r.get(EXCLUDE_OUTBOUND_PORTS, _ports, ()),
        exclude_inbound_cidrs=r.get(EXCLUDE_INBOUND_CIDRS, _cidrs, ()),
        exclude_outbound_cidrs=r.get(EXCLUDE_OUTBOUND_CIDRS, _cidrs, ()),
        requests=r.resources(((PROXY_CPU, "cpu"), (PROXY_MEMORY, "memory"))),
        limits=r.resources(((PROXY_CPU_LIMIT, "cpu"), (PROXY_MEMORY_LIMIT, "memory"))),
    )
    if r.problems:
        raise AnnotationError(r.problems)
    return settings


class _Reader:
    """Reads annotations with their parsers, collecting every problem with its field path."""

    def __init__(self, annotations: Mapping[str, str]) -> None:
        self.annotations = annotations
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        if name not in self.annotations:
            return default
        try:
            return parse(str(self.annotations[name]))
        except ValueError as exc:
            self.problems.append(f'metadata.annotations["{name}"]: {exc}')
            return default

    def resources(self, names: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        found = ((resource, self.get(annotation, _quantity, "")) for annotation, resource in names)
        return tuple((resource, value) for resource, value in found if value)


def opted_out(labels: Mapping[str, str], annotations: Mapping[str, str]) -> bool:
    """Whether the pod says ``meshproxy.io/inject: "false"`` (as a label or an annotation)."""
    return "false" in (str(labels.get(INJECT, "")).lower(), str(annotations.get(INJECT, "")).lower())


def sidecar_group(
    namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str], service_account: str
) -> str:
    """The pod's sidecar group: ``meshproxy.io/group`` when given, else ``<app>.<namespace>`` or
    ``<app>-<version>.<namespace>``, where ``app`` is the first of `APP_LABELS` present (else the
    service account) and ``version`` the first of `VERSION_LABELS`. The Kubernetes source puts a
    Service's pods in these groups, so both sides must call this one function."""
    explicit = annotations.get(GROUP)
    if explicit:
        return str(explicit)
    app = next((labels[k] for k in APP_LABELS if labels.get(k)), service_account or "default")
    version = next((labels[k] for k in VERSION_LABELS if labels.get(k)), "")
    return f"{app}-{version}.{namespace}" if version else f"{app}.{namespace}"


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE ID of every pod running as ``service_account`` in ``namespace``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account or 'default'}"


def controlplane_host(namespace: str = SYSTEM_NAMESPACE) -> str:
    """The controlplane Service's in-cluster DNS name (and the SAN of its serving certificate)."""
    return f"{CONTROLPLANE_SERVICE}.{namespace}.svc"


# ----------------------------------------------------------------------------- value parsers
# Each raises ValueError with the reason and what to write instead.


def _group(text: str) -> str:
    if not _GROUP.match(text):
        raise ValueError(f"{text!r} is not a group name (letters, digits, '.', '_', '-')")
    return text


def _pq(text: str) -> PqPolicy:
    if text in get_args(PqPolicy):
        return cast(PqPolicy, text)
    raise ValueError(f"{text!r} is not one of: {', '.join(get_args(PqPolicy))}")


def _concurrency(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_CONCURRENCY:
        raise ValueError(f"{text!r} is not a number of workers (1-{MAX_CONCURRENCY})")
    return int(text)


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f'{text!r} is not "true" or "false"')
    return text.lower() == "true"


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = parse_ports("value", text)
    except CaptureError as exc:
        raise ValueError(str(exc).removeprefix("value: ")) from None
    if ports.everything:
        raise ValueError("'*' is not allowed here: list the ports, e.g. 8081,9000")
    return ports.ports


def _cidrs(text: str) -> tuple[str, ...]:
    try:
        cidrs = parse_cidrs("value", text)
    except CaptureError as exc:
        raise ValueError(str(exc).removeprefix("value: ")) from None
    if cidrs.everything:
        raise ValueError("'*' is not allowed here: list the networks, e.g. 10.0.0.0/8")
    return tuple(str(n) for n in cidrs.networks)


def _quantity(text: str) -> str:
    if not _QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi)")
    return text
