"""Compiles an envoy.config.bootstrap.v3.Bootstrap into one runtime ``Config``.

Owns what only the whole bootstrap can decide: node and admin, unique listener and cluster
names, distinct listener addresses, and that every cluster a route or tcp_proxy names is
defined. The per-resource compilers live in ``compile_listener``, ``compile_route`` and
``compile_cluster`` and are re-exported here for the xDS client, which compiles resources one
by one. Each collects every problem as "field.path: message"; nothing half-built escapes.
Must not depend on file formats (``bootstrap.py`` reads files), asyncio or sockets.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Iterator, Sequence
from typing import TypeVar

from envoy.config.bootstrap.v3 import bootstrap_pb2

from meshproxy.config.compile_cluster import cluster, compile_cluster
from meshproxy.config.compile_common import Ctx, access_logs, bind_address
from meshproxy.config.compile_dynamic import dynamic_resources
from meshproxy.config.compile_listener import compile_listener, listener
from meshproxy.config.compile_overload import compile_overload_manager
from meshproxy.config.compile_route import compile_route_configuration
from meshproxy.config.fidelity import refuse_unsupported
from meshproxy.config.model import Admin, Config, HttpConnectionManager, Node
from meshproxy.errors import ConfigError

_K = TypeVar("_K", bound=Hashable)

__all__ = ["compile_bootstrap", "compile_cluster", "compile_listener", "compile_route_configuration"]


def compile_bootstrap(msg: bootstrap_pb2.Bootstrap) -> Config:
    """The runtime Config of a static bootstrap; raises ConfigError listing every problem."""
    ctx = Ctx("", [], secrets={secret.name: secret for secret in msg.static_resources.secrets})
    refuse_unsupported(msg, ctx)
    admin = _admin(msg.admin, ctx.at("admin"))
    static = ctx.at("static_resources")
    resources = msg.static_resources
    clusters = [cluster(c, cctx) for c, cctx in static.each("clusters", resources.clusters)]
    for unnamed in (ln for ln in resources.listeners if not ln.name):
        # As Envoy: a static listener without a name gets a generated one (a UUID); only one
        # that LDS may update or remove needs its own.
        unnamed.name = str(uuid.uuid4())
    listeners = [listener(ln, lctx) for ln, lctx in static.each("listeners", resources.listeners)]
    dynamic = None
    if msg.HasField("dynamic_resources"):
        kinds: dict[str, str] = {c.name: c.discovery for c in clusters if c is not None}
        dynamic = dynamic_resources(msg.dynamic_resources, ctx.at("dynamic_resources"), kinds)
    for index, ln in enumerate(listeners):
        for chain in ln.filter_chains if ln is not None else ():
            if isinstance(chain.filter, HttpConnectionManager) and chain.filter.rds:
                static.at("listeners", index).problem(
                    f'routes over RDS ("{chain.filter.rds}") are only supported for listeners '
                    "delivered over LDS; give a static listener an inline route_config"
                )

    for field, names in (
        ("clusters", [c.name for c in resources.clusters]),
        ("listeners", [ln.name for ln in resources.listeners]),
    ):
        for index, first, dup in _repeats([name or None for name in names]):
            static.at(field, index).at("name").problem(
                f'"{dup}" is also the name of {field}[{first}]; names must be unique'
            )
    addresses = [(ln.address.host, ln.address.port) if ln and ln.address.port else None for ln in listeners]
    for index, first, (host, port) in _repeats(addresses):
        static.at("listeners", index).at("address").problem(
            f"{host}:{port} is also the address of listeners[{first}]; each listener needs its own"
        )
    if dynamic is None or not dynamic.cds:  # with CDS, the clusters named may still arrive
        _check_cluster_refs(ctx, sorted({c.name for c in resources.clusters if c.name}))

    overload = None
    if msg.HasField("overload_manager"):
        overload = compile_overload_manager(msg.overload_manager, ctx.at("overload_manager"))

    if ctx.problems:
        raise ConfigError(ctx.problems)
    return Config(
        node=Node(msg.node.id, msg.node.cluster),
        admin=admin,
        listeners=tuple(ln for ln in listeners if ln is not None),
        clusters=tuple(c for c in clusters if c is not None),
        dynamic=dynamic,
        overload=overload,
        bootstrap=msg,
    )


def _admin(msg: bootstrap_pb2.Admin, ctx: Ctx) -> Admin:
    address = bind_address(msg, ctx, who="the admin listener") if msg.HasField("address") else None
    paths = [msg.access_log_path] if msg.access_log_path else []
    paths += [log.path for log in access_logs(msg.access_log, ctx)]
    if len(paths) > 1:
        ctx.problem("give the admin interface one access log: access_log_path or a single access_log")
    return Admin(address, paths[0] if paths else None)


def _check_cluster_refs(ctx: Ctx, defined: list[str]) -> None:
    known = set(defined)
    listing = (
        f"defined clusters: {', '.join(defined)}"
        if defined
        else "no clusters are defined in static_resources"
    )
    for path, name in ctx.cluster_refs:
        if name not in known:
            ctx.problems.append(f'{path}: unknown cluster "{name}" ({listing})')


def _repeats(keys: Sequence[_K | None]) -> Iterator[tuple[int, int, _K]]:
    """(index, index of its first occurrence, key) for each key seen before; None keys never
    repeat."""
    first: dict[_K, int] = {}
    for index, key in enumerate(keys):
        if key is not None and first.setdefault(key, index) != index:
            yield index, first[key], key
