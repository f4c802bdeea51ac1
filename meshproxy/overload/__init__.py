"""Envoy's overload manager for meshproxy: resource monitors, triggers and actions.

``config`` (frozen, from the bootstrap's ``overload_manager``), ``manager`` (the sans-I/O
policy), ``state`` (what the data plane reads), ``stats``, ``monitors`` (the OS readings),
``connections`` (the global downstream connection count), ``runtime`` (the asyncio shell) and
``trim`` (when freed heap goes back to the kernel after a burst).
docs/overload.md describes the whole and the hooks the data plane calls.
Must not depend on the listener, HTTP or upstream packages (they depend on this).
"""
