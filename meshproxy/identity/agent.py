"""The proxy's own identity agent: an SVID from the control plane's CA, kept on local disk.

Owns the step between the CA client and the TLS contexts: at start it generates a key, has the
CA sign it (``SvidClient``), and writes ``cert.pem``, ``key.pem`` (mode 0600) and ``ca.pem``
into a directory, each by atomic rename; the rotator renews at half of the lifetime and the
files are rewritten. Listeners and clusters name these files in Envoy's usual ``filename``
data sources, and the file watcher the proxy already runs (``identity/source.py``) moves new
handshakes onto the new certificate while open connections carry on. The key never leaves the
machine: only CSRs travel. With a trust bundle (``meshproxy run --ca-trust``) the CA is dialled
over TLS (the controlplane's port 15012) and its certificate verified against that bundle, read
again for every CSR; the first CSR cannot use a bundle the CA has not sent yet, so the bundle is
provisioned beside the token (docs/identity.md). This is the shape of SPIRE's spiffe-helper
and istio-agent's file mode, chosen so that one rotation path serves cert-manager, SPIRE and our own CA alike.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from meshproxy.identity.source import CertMaterial
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.svid_client import SvidClient, SvidRotator

log = logging.getLogger("meshproxy.identity")

FILES = ("cert.pem", "key.pem", "ca.pem")


def write_material(directory: Path, material: CertMaterial) -> None:
    """Write one consistent set; the key first, so no moment shows a new certificate without it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data, mode in (
        ("key.pem", material.key_pem, 0o600),
        ("cert.pem", material.chain_pem, 0o644),
        ("ca.pem", material.bundle_pem, 0o644),
    ):
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, directory / name)


async def start_agent(
    ca_address: str, identity: str, token_file: Path, directory: Path, trust_file: Path | None = None
) -> SvidRotator:
    """Obtain the first SVID (raises SvidError if the CA refuses), write it, keep renewing it.
    With ``trust_file`` the CA is reached over TLS and must verify against that bundle."""
    client = SvidClient(ca_address, SpiffeId.parse(identity), token_file, trust_file=trust_file)
    rotator = SvidRotator(client)
    first = await rotator.start()
    write_material(directory, first)

    def renewed(material: CertMaterial) -> None:
        write_material(directory, material)
        log.info("identity %s renewed; the TLS contexts pick it up from %s", identity, directory)

    rotator.subscribe(renewed)
    log.info("identity %s issued by %s into %s", identity, ca_address, directory)
    return rotator
