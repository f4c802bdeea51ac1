"""Fixtures for the TLS unit tests: one PKI per session, both twins of the record path."""

from __future__ import annotations

from types import ModuleType

import pytest
from twins import import_twin
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


@pytest.fixture(params=["c", "py"], scope="module")
def records(request: pytest.FixtureRequest) -> ModuleType:
    """The ``_records_c`` or ``_records_py`` module: one suite runs both twins."""
    return import_twin("meshproxy.tls._records", request.param)


@pytest.fixture(scope="module")
def records_c() -> ModuleType:
    return import_twin("meshproxy.tls._records", "c")
