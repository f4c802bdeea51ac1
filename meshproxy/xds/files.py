"""Listeners and clusters from files: Envoy's filesystem subscriptions (``path_config_source``).

Owns following the files a bootstrap's ``dynamic_resources`` name for LDS and CDS. Each file
holds one DiscoveryResponse (YAML or JSON: ``version_info`` and ``resources``, each an ``@type``d
Listener or Cluster), the shape Envoy reads. It is read at start and again whenever it changes:
the path is polled (following links: inode, size, mtime and ctime, once a second, as certificate
files are; Envoy reacts to a rename over the file, and an atomic replace is seen by both). Each
read is handed to the ADS client's state machine as a state-of-the-world response, so a file is
accepted or refused as a whole, exactly as an ADS response is: a refused file is logged with
every problem (a NACK with nobody to send it to) and the last good configuration keeps serving.
An unreadable or unparseable file is refused the same way. EDS clusters and RDS routes need the
ADS stream: a file that holds them is refused with their path.

Must not be imported unless the bootstrap names such files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envoy.service.discovery.v3 import discovery_pb2 as dpb
from google.protobuf import json_format

from meshproxy.config import limits
from meshproxy.config.bootstrap import load_document
from meshproxy.config.model import Cluster, HttpConnectionManager, Listener
from meshproxy.config.schema import check_message
from meshproxy.errors import ConfigError
from meshproxy.xds.resources import CLUSTER, LISTENER, SHORT

if TYPE_CHECKING:
    from meshproxy.xds.client import AdsClient
    from meshproxy.xds.state import Staged

log = logging.getLogger("meshproxy.xds")

POLL_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _stamp(path: str) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_response(path: str, type_url: str, nonce: int) -> dpb.DiscoveryResponse:
    """The DiscoveryResponse the file holds, as an ADS response of ``type_url`` (its type);
    ConfigError naming every problem otherwise."""
    what = f"the {SHORT[type_url]} file"
    try:
        with open(path, "rb") as file:
            data = file.read(limits.MAX_BYTES + 1)
        limits.check_size(len(data))
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not UTF-8 text ({err.reason})"
        raise ConfigError([f"cannot read {what}: {reason}"]) from err
    document = load_document(text, path, what)
    checked = check_message(document, dpb.DiscoveryResponse.DESCRIPTOR)
    if checked.problems:
        raise ConfigError(checked.problems)
    response = json_format.ParseDict(document, dpb.DiscoveryResponse())
    if response.type_url and response.type_url != type_url:
        raise ConfigError([f'type_url: "{response.type_url}" in {what}; it must be {type_url} or absent'])
    response.type_url = type_url
    response.nonce = str(nonce)
    return response


def needs_ads(staged: Staged) -> list[str]:
    """What in a file's resources only the ADS stream could complete (EDS, RDS)."""
    problems = []
    for name, compiled in staged.compiled.items():
        if isinstance(compiled, Cluster) and compiled.discovery == "EDS":
            problems.append(f'cluster "{name}": type EDS needs ADS; give it a load_assignment (type STATIC)')
        if isinstance(compiled, Listener):
            for chain in compiled.filter_chains:
                if isinstance(chain.filter, HttpConnectionManager) and chain.filter.rds:
                    problems.append(f'listener "{name}": rds needs ADS; give it an inline route_config')
                    break
    return problems


async def follow(client: AdsClient, interval: float = POLL_INTERVAL) -> None:
    """Reads the LDS and CDS files now (clusters first), then whenever one changes, forever."""
    dynamic = client.dynamic
    files = [(CLUSTER, dynamic.cds_path), (LISTENER, dynamic.lds_path)]
    files = [(url, path) for url, path in files if path]
    seen: dict[str, _Stamp | None] = {}
    nonce = 0
    async with client.lock:
        client.state.connected(asyncio.get_running_loop().time())
        client.state.requests_to_send()  # nobody to send them to
    while True:
        for type_url, path in files:
            stamp = _stamp(path)
            if path in seen and stamp == seen[path]:
                continue
            seen[path] = stamp
            nonce += 1
            async with client.lock:
                await _read_into(client, path, type_url, nonce)
                client.state.requests_to_send()
        await asyncio.sleep(interval)


async def _read_into(client: AdsClient, path: str, type_url: str, nonce: int) -> None:
    try:
        response = read_response(path, type_url, nonce)
    except ConfigError as err:
        client.stats.nacks += 1
        log.error(
            "xDS file %s refused (the last good configuration stays): %s", path, "; ".join(err.problems)
        )
        return
    client.stats.responses += 1
    await client.handle(response, needs_ads)
