"""Certificates the corpus files name, and the clients the checks speak with.

Owns the convention of the files' ``certs/`` names: ``<stem>-cert.pem`` and ``<stem>-key.pem``
are a leaf of the session's test CA for ``<stem>`` (DNS name ``<stem>.example.com``, or the
name in ``DNS_NAMES``; URI SAN ``spiffe://cluster.local/ns/default/sa/<stem>``), ``ca.pem`` the
CA; ``request``, one HTTP/1.1 exchange over plain TCP or TLS (SNI and ALPN chosen by the
check) on the raw-socket client of the integration tests. The clients are Python's ``ssl``:
an independent TLS stack, classical groups (the proxy's default policy prefers
X25519MLKEM768 and accepts X25519).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pathlib
import ssl
import tempfile

from certs import IssuedLeaf, make_ca, make_leaf
from integration import wire

DNS_NAMES = {"istiod": "istiod.istio-system.svc", "contour": "contour"}


@functools.cache
def leaf(stem: str) -> IssuedLeaf:
    uri = f"spiffe://cluster.local/ns/default/sa/{stem}"
    return make_leaf(uri_sans=[uri], dns_sans=[DNS_NAMES.get(stem, f"{stem}.example.com")])


def write_cert(directory: pathlib.Path, name: str) -> pathlib.Path:
    """Write ``directory/name`` (``ca.pem``, ``<stem>-cert.pem`` or ``<stem>-key.pem``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if name == "ca.pem":
        path.write_bytes(make_ca().cert_pem)
    elif name.endswith("-cert.pem"):
        path.write_bytes(leaf(name.removesuffix("-cert.pem")).cert_pem)
    elif name.endswith("-key.pem"):
        path.write_bytes(leaf(name.removesuffix("-key.pem")).key_pem)
    else:
        raise AssertionError(f"the corpus has no certificate file {name!r}")
    return path


def client_context(alpn: list[str] | None = None, cert: str | None = None) -> ssl.SSLContext:
    """Trusts the test CA (names unchecked: the SNI picks the chain); ``cert``: a client leaf."""
    ctx = ssl.create_default_context(cadata=make_ca().cert_pem.decode())
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        directory = pathlib.Path(_cert_dir())
        ctx.load_cert_chain(
            write_cert(directory, f"{cert}-cert.pem"), write_cert(directory, f"{cert}-key.pem")
        )
    return ctx


def server_context(stem: str) -> ssl.SSLContext:
    """A TLS upstream's context: the leaf of ``stem``."""
    directory = pathlib.Path(_cert_dir())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(write_cert(directory, f"{stem}-cert.pem"), write_cert(directory, f"{stem}-key.pem"))
    return ctx


@functools.cache
def _cert_dir() -> str:
    """Where the client and upstream certificates go (ssl loads chains from files only)."""
    return tempfile.mkdtemp(prefix="compat-certs-")


async def request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    host: str = "example.com",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    tls: ssl.SSLContext | None = None,
    sni: str | None = None,
) -> wire.Response:
    """One request on a fresh connection (TLS when ``tls``; ``sni``: the server name sent)."""
    async with asyncio.timeout(wire.TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=(sni or "") if tls else None
        )
    try:
        writer.write(wire.request(method, path, headers, body, host=host))
        return await wire.read_response(reader, method=method)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
