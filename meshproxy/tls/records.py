"""Dispatcher for a TLS connection's record path: exports the compiled ``Records`` or its twin.

Owns only the choice; the behaviour lives in ``_records_py.py`` (the reference, over cffi) and
``_records_c.pyx`` (the same OpenSSL calls from C), selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("Records",)

if TYPE_CHECKING:
    from meshproxy.tls._records_py import Records
else:
    Records = load_twin(__name__.rpartition(".")[0] + "._records").Records
