"""Load balancers: sans-I/O pickers that choose an endpoint index for each request.

Pickers take their host set (as weights, hash keys and live ``rq_active`` counts) and any
randomness (a seed) as parameters; they do not import asyncio, sockets or protobuf. Each fast
path is a Cython module beside a pure-Python twin, chosen at import by :mod:`meshproxy._ext`:
``round_robin``, ``least_request``, ``random_lb``, ``ring_hash`` (with XXH64) and ``maglev``.
:func:`build_picker` (in ``factory``) maps a cluster's ``LbConfig`` onto them.
"""

from meshproxy.upstream.lb.factory import LbHost, Picker, build_picker

__all__ = ("LbHost", "Picker", "build_picker")
