"""Load balancers: sans-I/O pickers that choose an endpoint index for each request.

Pickers take their host set (as weights) and any randomness as parameters; they do not import
asyncio, sockets or configuration. Each fast path is a Cython module beside a pure-Python twin,
chosen at import by :mod:`meshproxy._ext`.
"""
