"""The demo's layout: what runs where, read from the controlplane's embedded default mesh.

Owns the step from the mesh config to the processes the demo starts: the demo's service (its
versions, each behind its own sidecar, their applications' addresses and the split the mesh
declares), the sidecar groups
(group, SPIFFE identity, certificate directory, ADS flavour) and the caller's outbound listener,
all taken from ``controlplane/mesh/default.yaml`` so that nothing here repeats a port number.
With ``free_ports`` the default is copied with every port it names replaced by a free one and
its certificate directory moved into the work directory, so that the demo can run beside
another copy of itself (the test suite does). Also writes each sidecar's bootstrap (from
``sidecar.yaml`` beside this file) and the bootstrap and management tokens.

Must not depend on: asyncio, subprocesses, the controlplane's servers (only its mesh model and
its tokens file format).
"""

from __future__ import annotations

import random
import re
import socket
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from controlplane.mesh import default_mesh_text, load_mesh
from controlplane.mesh.model import Address, Mesh, Service
from controlplane.tokens import Grant, append_token, new_token

SERVICE = "hello"  # the service whose traffic the demo splits
CALLER = "web"  # the sidecar group the demo's client sends through
DEFAULT_XDS_ADDRESS = "127.0.0.1:15010"  # `controlplane serve`'s default
OPERATOR = "spiffe://mesh.local/ns/ops/sa/demo"  # who meshctl speaks for


class DemoError(Exception):
    """Something the demo needs did not come up; the message says what and what to do."""


@dataclass(frozen=True, slots=True)
class App:
    """One version's application: a small HTTP server the demo runs in-process."""

    version: str
    address: Address
    sidecar: str  # the group of the sidecar in front of it: callers reach it over PQ mTLS only


@dataclass(frozen=True, slots=True)
class Sidecar:
    group: str
    identity: str
    cert_dir: Path
    inbound: Address | None
    api_type: str  # GRPC (state of the world) or DELTA_GRPC


@dataclass(frozen=True, slots=True)
class Layout:
    mesh: Mesh
    mesh_file: Path | None  # None: the controlplane runs its embedded default
    xds_address: str  # where the controlplane is asked to listen (port 0: it picks)
    service: Service
    apps: tuple[App, ...]
    sidecars: tuple[Sidecar, ...]  # the caller's first
    entry: Address  # the caller's outbound listener for SERVICE

    @property
    def split(self) -> str:
        """The declared split of the service's catch-all route, as meshctl writes it."""
        return " ".join(f"{v}={w}" for v, w in self.service.routes[-1].split)

    def fixed_ports(self) -> list[tuple[Address, str]]:
        """Every address the demo's processes will bind, with what binds it."""
        used = [(_split(self.xds_address), "the controlplane (xDS, CA, management)")]
        used.append((self.entry, f"{CALLER}'s sidecar: the outbound listener for {SERVICE}"))
        used += [(s.inbound, f"{s.group}'s sidecar: inbound") for s in self.sidecars if s.inbound]
        used += [(a.address, f"the {SERVICE} {a.version} application") for a in self.apps]
        return used


def plan(work: Path, *, free_ports: bool) -> Layout:
    """The layout of the embedded default mesh (or of its copy on free ports, in ``work``)."""
    text, mesh_file, xds_address = default_mesh_text(), None, DEFAULT_XDS_ADDRESS
    if free_ports:
        mesh, _ = load_mesh(text, source="default.yaml")
        text = _on_free_ports(text, mesh, work / "certs")
        mesh_file, xds_address = work / "mesh.yaml", "127.0.0.1:0"
        mesh_file.write_text(text, encoding="utf-8")
    mesh, _ = load_mesh(text, source=str(mesh_file or "default.yaml"))
    service = mesh.service(SERVICE)
    if service is None or len(service.versions) < 2:
        raise DemoError(f"the mesh has no service {SERVICE!r} with two versions to split between")
    apps = []
    for version in service.versions:
        car = version.sidecar
        if car is None or car.app is None:
            # The demo's story is PQ mTLS all the way, whichever version the split picks.
            raise DemoError(f"{SERVICE} {version.name} has no sidecar of its own (inbound, app) in the mesh")
        apps.append(App(version.name, car.app, car.group))
    sidecars = [
        (owner, car) for owner in mesh.services for car in owner.sidecars() if car.group == CALLER
    ] + [(service, car) for car in service.sidecars()]
    if not sidecars or sidecars[0][1].group != CALLER or not service.admits(sidecars[0][0].identity):
        raise DemoError(f"the mesh has no sidecar group {CALLER!r} allowed to call {SERVICE!r}")
    return Layout(
        mesh=mesh,
        mesh_file=mesh_file,
        xds_address=xds_address,
        service=service,
        apps=tuple(apps),
        sidecars=tuple(
            Sidecar(
                group=car.group,
                identity=owner.identity,
                cert_dir=Path(mesh.sidecars.cert_dir.format(group=car.group, service=owner.name)),
                inbound=car.inbound,
                # Both flavours of ADS: the caller on state of the world, the others on delta.
                api_type="GRPC" if i == 0 else "DELTA_GRPC",
            )
            for i, (owner, car) in enumerate(sidecars)
        ),
        entry=(mesh.sidecars.outbound_address, service.port),
    )


def busy(addresses: list[tuple[Address, str]]) -> list[str]:
    """The addresses something else already listens on, each with what the demo needs it for."""
    problems = []
    for (host, port), what in addresses:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                problems.append(f"{host}:{port} ({what}): {exc.strerror}")
    return problems


def write_bootstrap(work: Path, car: Sidecar, admin_port: int, xds_address: str) -> Path:
    host, port = _split(xds_address)
    template = string.Template(resources.files(__package__).joinpath("sidecar.yaml").read_text())
    path = work / f"{car.group}.bootstrap.yaml"
    values = {"node_id": f"{car.group}-sidecar", "group": car.group, "admin_port": admin_port}
    path.write_text(template.substitute(values, xds_host=host, xds_port=port, api_type=car.api_type))
    return path


def write_token(tokens: Path, identity: str, token_file: Path) -> Path:
    """Grant ``identity`` a new token in ``tokens`` and keep the token in ``token_file``."""
    token = new_token()
    append_token(tokens, token, Grant.parse(identity))
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return token_file


def free_port() -> int:
    """A loopback port nobody listens on now, for a process started later to bind.

    Chosen at random below the kernel's ephemeral range: a port bound to 0 and released (the
    usual recipe) comes from that range, where any connection's source port, or another test
    worker's listener, can take it before the process binds it; below it only other callers of
    this function compete, over thousands of ports."""
    low, _ = _ephemeral_range()
    for _ in range(64):
        port = _random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded machine: the ephemeral range, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_random = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _on_free_ports(text: str, mesh: Mesh, cert_root: Path) -> str:
    """The mesh text with each port it binds or names replaced by a free one, certs in ``cert_root``."""
    ports = set()
    for service in mesh.services:
        ports.add(service.port)
        for version in service.versions:
            ports.update(e.address[1] for e in version.endpoints)
        for car in service.sidecars():
            ports.update(a[1] for a in (car.inbound, car.app) if a)
    mapping = {str(p): str(free_port()) for p in ports}
    text = re.sub(r"(?<!\d)\d{2,5}(?!\d)", lambda m: mapping.get(m.group(), m.group()), text)
    text, n = re.subn(r"(?m)^(\s*cert_dir:\s*)\S+", rf"\g<1>{cert_root}/{{group}}", text)
    if n != 1:
        raise DemoError("the default mesh has no sidecars.cert_dir to move")
    return text


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
