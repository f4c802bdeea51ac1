"""``meshproxy run --concurrency N``: N worker processes behind one supervisor (docs/workers.md).

The supervisor (``supervisor.py``) owns what a sidecar has once: the admin port, the ADS
stream and its ACK/NACK decision, the identity agent and the listener addresses; each worker
(``worker.py``) is a ``Server`` of its own that binds every listener with SO_REUSEPORT and
applies the configurations the supervisor forwards over its channel (``channel.py``). The
admin aggregates the workers (``admin.py``, ``aggregate.py``). Must not be imported by the
single-process path.
"""
