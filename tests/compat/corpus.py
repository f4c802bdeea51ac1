"""The compatibility corpus: one Envoy bootstrap per file in ``bootstraps/``, and what each must do.

Owns the registry (``CASES``: every file is either ``accepted``, with a check run against real
upstreams, or ``refused``, with the exact problems meshproxy reports), and ``Env``, which
rewrites a file for a test run as a deployment tool would for its environment: listeners on
loopback port 0 (or a port chosen up front, when another part of the same file dials it), the
admin interface on loopback, each endpoint's host (``Case.hosts``: host, or host:port, to an
upstream's key) to a local upstream, ``certs/...`` file names to certificates generated for the
test (``certs/<stem>-cert.pem``, ``certs/<stem>-key.pem``, ``certs/ca.pem``), and Envoy's
``/var/lib/envoy`` and ``/var/log/envoy`` paths to the test's directory. Nothing else changes:
what the file asks for is what runs.

The files' header comments say which published shape each follows (Envoy's examples, Istio,
Contour, Emissary); ``docs/compatibility.md`` is rendered from them and from the registry
(``doc.py``). Must not depend on meshproxy's internals beyond the bootstrap parser and the
integration harness.
"""

from __future__ import annotations

import contextlib
import pathlib
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from integration.harness import Proxy, running_proxy

from .tls import write_cert

BOOTSTRAPS = pathlib.Path(__file__).parent / "bootstraps"
_MOVED_DIRS = ("/var/lib/envoy/", "/var/log/envoy/")

Check = Callable[["Env"], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    name: str  # the file's stem
    asserted: str  # accepted: what the check proves over real sockets; refused: why
    check: Check | None = None  # None: refused
    refused: tuple[str, ...] = ()  # every problem meshproxy reports, exactly
    hosts: Mapping[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.check is not None

    @property
    def path(self) -> pathlib.Path:
        return BOOTSTRAPS / f"{self.name}.yaml"

    def origin(self) -> str:
        """The file's header comment, without its closing "Written for meshproxy."."""
        lines = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        text = " ".join(lines).removeprefix("Shape: ")
        return text.replace("Written for meshproxy.", "").strip()


CASES: dict[str, Case] = {}


def accepted(name: str, asserted: str, **hosts: str) -> Callable[[Check], Check]:
    """Register ``check`` for ``name``: the file must run and behave as it asks.

    ``hosts``: endpoint host (or "host:port") to upstream key; keyword arguments cannot spell
    every host name, so ``_`` in a key stands for ``-`` and ``__`` for ``.``.
    """

    def register(check: Check) -> Check:
        _register(Case(name, asserted, check=check, hosts=_hosts(hosts)))
        return check

    return register


def refused(name: str, why: str, *problems: str, **hosts: str) -> None:
    """Register ``name`` as refused with exactly ``problems`` (paths included)."""
    _register(Case(name, why, refused=problems, hosts=_hosts(hosts)))


def _hosts(spelled: Mapping[str, str]) -> dict[str, str]:
    return {key.replace("__", ".").replace("_", "-"): value for key, value in spelled.items()}


def _register(case: Case) -> None:
    assert case.name not in CASES, f"{case.name} registered twice"
    CASES[case.name] = case


class Env:
    """One run of one case: the rewritten document, its upstreams and the proxy on it."""

    def __init__(self, case: Case, upstreams: Mapping[str, int], tmp: pathlib.Path) -> None:
        self.case = case
        self.ports: dict[str, int] = dict(upstreams)  # upstream key -> port (checks add more)
        self.tmp = tmp
        self.listener_ports: dict[str, int] = {}  # listener name -> port chosen up front
        self.proxy_: Proxy | None = None

    # ------------------------------------------------------------------ the document

    def source(self) -> dict[str, Any]:
        document: dict[str, Any] = yaml.safe_load(self.case.path.read_text(encoding="utf-8"))
        return document

    def document(self) -> dict[str, Any]:
        doc = self.source()
        static = doc.get("static_resources", {})
        for listener in static.get("listeners", []):
            self._rewrite_listener(listener)
        for cluster in static.get("clusters", []):
            self._rewrite_cluster(cluster)
        admin = doc.get("admin", {}).get("address", {})
        if "socket_address" in admin:
            admin["socket_address"].update(address="127.0.0.1", port_value=0)
        result: dict[str, Any] = self._paths(doc)
        return result

    def rewrite_resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A listener or cluster the case serves over xDS or from a file, rewritten alike."""
        if "filter_chains" in resource:
            self._rewrite_listener(resource)
        else:
            self._rewrite_cluster(resource)
        result: dict[str, Any] = self._paths(resource)
        return result

    def _rewrite_listener(self, listener: dict[str, Any]) -> None:
        sock = listener.get("address", {}).get("socket_address")
        if sock is not None:
            sock.update(address="127.0.0.1", port_value=self.listener_ports.get(listener.get("name", ""), 0))

    def _rewrite_cluster(self, cluster: dict[str, Any]) -> None:
        for locality in cluster.get("load_assignment", {}).get("endpoints", []):
            for lb in locality.get("lb_endpoints", []):
                endpoint = lb.get("endpoint", {})
                sock = endpoint.get("address", {}).get("socket_address")
                if sock is None:
                    continue
                key = self.case.hosts.get(f"{sock['address']}:{sock.get('port_value')}")
                key = key or self.case.hosts.get(sock["address"])
                if key is None:
                    continue
                sock.update(address="127.0.0.1", port_value=self.ports[key])
                if "health_check_config" in endpoint:
                    endpoint["health_check_config"]["port_value"] = self.ports[key]

    def _paths(self, node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: self._path(v) if k in ("filename", "path") else self._paths(v) for k, v in node.items()
            }
        if isinstance(node, list):
            return [self._paths(v) for v in node]
        return node

    def _path(self, value: Any) -> Any:
        if not isinstance(value, str):
            return self._paths(value)
        if m := re.fullmatch(r"certs/(.+)", value):
            return str(write_cert(self.tmp / "certs", m.group(1)))
        for moved in _MOVED_DIRS:
            if value.startswith(moved):
                return str(self.tmp / value.removeprefix(moved))
        return value

    # ------------------------------------------------------------------ running it

    def choose_listener_port(self, listener: str, port: int) -> None:
        """Bind ``listener`` on ``port`` (when another part of the file dials it)."""
        self.listener_ports[listener] = port

    @contextlib.asynccontextmanager
    async def proxy(self, rng: random.Random | None = None) -> AsyncIterator[Proxy]:
        async with running_proxy(self.document(), rng=rng) as proxy:
            self.proxy_ = proxy
            try:
                yield proxy
            finally:
                self.proxy_ = None

    def port(self, listener: str | int = 0) -> int:
        """A listener's bound port, by name or (for unnamed ones) by its index in the file."""
        assert self.proxy_ is not None, "start the proxy first"
        server = self.proxy_.server
        if isinstance(listener, int):
            listener = server.config.listeners[listener].name
        return server.listener_address(listener)[1]
