"""Listeners and clusters from files (Envoy's ``path_config_source``), against real sockets.

The proxy starts on a bootstrap whose ``dynamic_resources`` name an LDS and a CDS file, serves
what they hold, follows an atomic replace of a file (a rename over it, as Envoy's examples and
Kubernetes' ConfigMap volumes do), refuses a bad file as a whole while the last good
configuration keeps serving, and refuses resources only ADS could complete (EDS, RDS).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx

from .harness import ROUTER, addr, cluster, eventually, http_listener, running_proxy
from .upstreams import aiohttp_upstream

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TIMEOUT = 10.0


def write_atomically(path: Path, resources: list[dict[str, Any]], version: str) -> None:
    """What a deployment tool does: write aside, then rename over the file."""
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps({"version_info": version, "resources": resources}))
    os.replace(aside, path)


def direct(body: str) -> dict[str, Any]:
    listener = http_listener(
        [
            {
                "match": {"prefix": "/direct"},
                "direct_response": {"status": 200, "body": {"inline_string": body}},
            },
            {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
        ]
    )
    return {"@type": LISTENER, **listener}


def files_bootstrap(lds: Path, cds: Path) -> dict[str, Any]:
    return {
        "node": {"id": "files", "cluster": "files"},
        "admin": {"address": addr("127.0.0.1", 0)},
        "dynamic_resources": {
            "lds_config": {"path_config_source": {"path": str(lds)}},
            "cds_config": {"path_config_source": {"path": str(cds)}},
        },
    }


async def test_files_are_served_followed_and_a_bad_one_changes_nothing(tmp_path: Path) -> None:
    lds, cds = tmp_path / "lds.json", tmp_path / "cds.json"
    async with aiohttp_upstream("from-file") as up:
        write_atomically(cds, [{"@type": CLUSTER, **cluster("backend", up)}], "c1")
        write_atomically(lds, [direct("one")], "l1")
        async with (
            running_proxy(files_bootstrap(lds, cds)) as proxy,
            httpx.AsyncClient(timeout=TIMEOUT) as client,
        ):
            await eventually(lambda: proxy.server.ready, TIMEOUT, "the first configuration from the files")
            assert (await client.get(proxy.url("/direct"))).text == "one"
            assert (await client.get(proxy.url("/echo/x"))).json()["server"] == "from-file"

            write_atomically(lds, [direct("two")], "l2")

            async def body() -> str:
                return (await client.get(proxy.url("/direct"))).text

            for _ in range(int(TIMEOUT / 0.05)):
                if await body() == "two":
                    break
                await asyncio.sleep(0.05)  # polling the proxy's answer: the file is polled each second
            assert await body() == "two"

            xds = proxy.server.xds
            assert xds is not None
            nacks = xds.stats.nacks
            lds.write_text("resources: [ {@type: nope")  # in place, unparseable
            await eventually(lambda: xds.stats.nacks == nacks + 1, TIMEOUT, "the bad file refused")
            write_atomically(
                lds,
                [
                    {
                        "@type": LISTENER,
                        "name": "http",
                        "address": addr("127.0.0.1", 0),
                        "filter_chains": [{"filters": [{"name": "x", "typed_config": {"@type": ROUTER}}]}],
                    }
                ],
                "l3",
            )
            await eventually(lambda: xds.stats.nacks == nacks + 2, TIMEOUT, "the invalid listener refused")
            assert await body() == "two"  # the last good configuration keeps serving
            status = xds.status()
            assert status["api_type"] == "path_config_source"
            assert status["types"]["Listener"]["version_info"] == "l2"
            assert "filter_chains[0].filters[0]" in status["types"]["Listener"]["last_nack"]
            # Envoy's config dump shows the dynamic resources with their versions
            configs = (await client.get(proxy.admin_url + "/config_dump")).json()["configs"]
            [clusters] = [c for c in configs if c["@type"].endswith("ClustersConfigDump")]
            [listeners] = [c for c in configs if c["@type"].endswith("ListenersConfigDump")]
            assert [
                (c["version_info"], c["cluster"]["name"]) for c in clusters["dynamic_active_clusters"]
            ] == [("c1", "backend")]
            [listener] = listeners["dynamic_listeners"]
            assert (listener["name"], listener["active_state"]["version_info"]) == ("http", "l2")


async def test_what_needs_ads_is_refused_in_a_file(tmp_path: Path) -> None:
    lds, cds = tmp_path / "lds.json", tmp_path / "cds.json"
    eds = {
        "@type": CLUSTER,
        "name": "backend",
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"ads": {}}},
    }
    write_atomically(cds, [eds], "c1")
    write_atomically(lds, [direct("one")], "l1")
    async with running_proxy(files_bootstrap(lds, cds)) as proxy:
        xds = proxy.server.xds
        assert xds is not None
        await eventually(lambda: xds.stats.nacks >= 1, TIMEOUT, "the EDS cluster refused")
        assert 'cluster "backend": type EDS needs ADS' in xds.status()["types"]["Cluster"]["last_nack"]
        assert not proxy.server.ready
