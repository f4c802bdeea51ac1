"""Fixtures for the TLS unit tests: one PKI per session, engines wired to each other in memory."""

from __future__ import annotations

import pytest
from unit.tls.tls_fixtures import Leaf, Pki


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def server_leaf(pki: Pki) -> Leaf:
    return pki.leaf("server")


@pytest.fixture(scope="session")
def client_leaf(pki: Pki) -> Leaf:
    return pki.leaf("client")
