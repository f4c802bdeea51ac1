"""Fixtures for the QUIC unit tests: the TLS unit tests' PKI (a session-scoped CA and two leaves)."""

from __future__ import annotations

from unit.tls.conftest import client_leaf, pki, server_leaf

__all__ = ["client_leaf", "pki", "server_leaf"]
