"""The sans-I/O router: an HTTP request's authority, target and headers in, a route decision out.

``table`` selects the virtual host and route, ``match`` holds the compiled matchers,
``action`` picks the cluster and computes rewrites and redirects, ``headers`` applies header
mutations. Nothing in this package imports asyncio, sockets or protobuf; randomness arrives
as an argument.
"""

from __future__ import annotations

from meshproxy.router.action import pick_cluster, redirect_location, rewrite_target
from meshproxy.router.decision import RouteDecision
from meshproxy.router.headers import MutationLevel, apply_mutations, compile_mutations
from meshproxy.router.table import CompiledVirtualHost, RouteTable

__all__ = [
    "CompiledVirtualHost",
    "MutationLevel",
    "RouteDecision",
    "RouteTable",
    "apply_mutations",
    "compile_mutations",
    "pick_cluster",
    "redirect_location",
    "rewrite_target",
]
