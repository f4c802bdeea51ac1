"""The admin ``/server_info`` and ``meshproxy version``: which HTTP/2 codec and extensions run.

Both run in a child process, so what they report is the choice that process's dispatchers made
from its environment (``MESHPROXY_NO_EXTENSIONS``, ``MESHPROXY_H2_CODEC``), not this one's.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import httpx
import pytest
from envoy.admin.v3 import server_info_pb2
from google.protobuf import json_format

from meshproxy import __version__, _ext

from .harness import bootstrap, proxy_process, running_proxy

CODEC_C = "meshproxy.http2._codec_c"
ROOT = pathlib.Path(_ext.__file__).resolve().parents[1]


def compiled_codec_available() -> bool:
    """Whether a process with this environment (less any codec override) uses libnghttp2."""
    try:
        __import__(CODEC_C)
    except ImportError:
        return False
    return not _ext.NO_EXTENSIONS


def version_json(**env: str) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if k != "MESHPROXY_H2_CODEC"}
    full.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "meshproxy", "version", "--json"],
        env=full,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def test_version_names_the_compiled_codec_where_it_is_built() -> None:
    info = version_json()
    expected = "nghttp2" if compiled_codec_available() else "h2"
    assert info["http2_codec"] == expected
    assert info["extensions"][CODEC_C] is (expected == "nghttp2")
    assert info["version"] == __version__
    assert info["openssl"].startswith("OpenSSL ")


def test_h2_codec_override_runs_the_twin_and_says_so() -> None:
    info = version_json(MESHPROXY_H2_CODEC="h2")
    assert info["http2_codec"] == "h2"
    assert info["extensions"][CODEC_C] is False
    # the override is the codec's alone: the balancers' extensions keep their state
    others = {name: on for name, on in info["extensions"].items() if name != CODEC_C}
    assert others == {name: on for name, on in version_json()["extensions"].items() if name != CODEC_C}


def test_no_extensions_reports_nothing_in_use() -> None:
    info = version_json(MESHPROXY_NO_EXTENSIONS="1")
    assert info["http2_codec"] == "h2"
    assert not any(info["extensions"].values())


def test_version_text_names_the_codec() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPROXY_H2_CODEC": "h2"}
    out = subprocess.run(
        [sys.executable, "-m", "meshproxy", "version"], env=env, capture_output=True, text=True, check=True
    )
    assert "http2 codec: h2\n" in out.stdout
    assert f"  {CODEC_C}: not in use\n" in out.stdout


@pytest.mark.parametrize("override", [None, "h2"])
def test_server_info_of_a_running_proxy(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, override: str | None
) -> None:
    if override is None:
        monkeypatch.delenv("MESHPROXY_H2_CODEC", raising=False)
        expected = "nghttp2" if compiled_codec_available() else "h2"
    else:
        monkeypatch.setenv("MESHPROXY_H2_CODEC", override)
        expected = "h2"
    with proxy_process(bootstrap([], []), tmp_path) as proc:
        status, body = proc.admin("/server_info?format=meshproxy")
    assert status == 200
    info = json.loads(body)
    assert info["http2_codec"] == expected
    assert info["extensions"][CODEC_C] is (expected == "nghttp2")
    assert info["state"] == "LIVE"
    assert info["uptime_current_epoch"].endswith("s")
    assert info["event_loop"].startswith("uvloop")


async def test_server_info_is_envoys_server_info() -> None:
    doc = bootstrap([], [])
    doc["node"] = {"id": "sidecar~10.0.0.1~web.default", "cluster": "web", "metadata": {"k": "v"}}
    async with running_proxy(doc) as proxy, httpx.AsyncClient() as client:
        body = (await client.get(f"{proxy.admin_url}/server_info")).json()
        proxy.server.draining = True
        draining = (await client.get(f"{proxy.admin_url}/server_info")).json()["state"]
        proxy.server.draining = False
    # Parses as Envoy's proto with unknown fields refused: every key is ServerInfo's.
    info = json_format.ParseDict(body, server_info_pb2.ServerInfo(), ignore_unknown_fields=False)
    assert info.state == server_info_pb2.ServerInfo.LIVE and draining == "DRAINING"
    assert info.version == f"meshproxy/{__version__}" and info.hot_restart_version == "disabled"
    assert info.node.id == "sidecar~10.0.0.1~web.default" and info.node.metadata["k"] == "v"
    assert info.command_line_options.concurrency == 1 and info.command_line_options.service_cluster == "web"
    assert info.uptime_current_epoch == info.uptime_all_epochs
