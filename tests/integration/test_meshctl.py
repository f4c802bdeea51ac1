"""``meshctl`` as a subprocess against ``python -m controlplane serve`` (also a subprocess):
every command with ``-o json``, the readable tables, the exit codes, and hot reload of the
mesh file seen through meshctl."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.mesh import default_mesh_text


@dataclass
class Served:
    address: str
    admin: str
    mesh: Path
    token_file: Path

    def meshctl(
        self, *args: str, token: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        auth = ["--token-file", str(self.token_file)] if token else []
        # An empty state directory: no local controlplane's token to fall back on.
        env = {k: v for k, v in os.environ.items() if k != "MESHCTL_TOKEN"}
        env["MESHPROXY_STATE_DIR"] = str(self.token_file.parent / "no-state")
        return subprocess.run(
            [sys.executable, "-m", "controlplane.meshctl", "--server", self.address, *auth, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            input=stdin,
        )

    def json(self, *args: str) -> Any:
        done = self.meshctl("-o", "json", *args)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)


def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("meshctl")
    run = [sys.executable, "-m", "controlplane"]
    admin_tokens = tmp / "admin-tokens"
    created = subprocess.run(
        [
            *run,
            "token",
            "create",
            "--tokens",
            str(admin_tokens),
            "--identity",
            "spiffe://mesh.local/ns/ops/sa/me",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token_file = tmp / "token"
    token_file.write_text(created.stdout)
    (tmp / "tokens").write_text("")
    mesh = tmp / "mesh.yaml"
    mesh.write_text(default_mesh_text())
    proc = subprocess.Popen(
        [
            *(*run, "serve", "--ca-dir", str(tmp / "ca"), "--tokens", str(tmp / "tokens")),
            *("--management-tokens", str(admin_tokens), "--mesh", str(mesh)),
            *("--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"),
            *("--xds-tls-address", "off"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("controlplane: serving the CA on 127.0.0.1:"), lines
        assert lines[3].startswith("controlplane: serving /metrics and /ready on"), lines
        address, admin = lines[0].split()[-1], lines[3].split()[-1]
        yield Served(address, admin, mesh, token_file)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr


def _rejection(mesh: Path, events: subprocess.Popen[str]) -> dict[str, Any]:
    """Write bad mesh files until the event stream reports a rejection (the stream registers
    with the server asynchronously, so an early rejection may precede it)."""
    assert events.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(events.stdout, selectors.EVENT_READ)
        for attempt in range(100):
            mesh.write_text(f"services: [oops {attempt}")
            if selector.select(timeout=1.5):
                event = json.loads(events.stdout.readline())
                if event["kind"] == "rejected":
                    return dict(event)
    raise AssertionError("no rejected event")


def test_status_get_and_proxies_as_json_and_as_tables(served: Served) -> None:
    status = served.json("status")
    assert status["source"] == f"file:{served.mesh}" and status["proxies"] == 0 and status["nacking"] == []
    assert sorted(g["name"] for g in status["groups"]) == ["default", "hello-v1", "hello-v2", "web"]
    config = served.json("get")
    assert config["version"] == status["version"] and "name: hello" in config["mesh_yaml"]
    assert served.json("proxies") == {"proxies": []}
    table = served.meshctl("status")
    assert table.returncode == 0 and "GROUP" in table.stdout and "hello-v2" in table.stdout
    assert served.meshctl("proxies").stdout == "no proxies connected\n"


def test_apply_dry_run_apply_and_refusal(served: Served, tmp_path: Path) -> None:
    before = served.json("status")["version"]
    new = tmp_path / "mesh.yaml"
    new.write_text(default_mesh_text().replace("{v1: 90, v2: 10}", "{v1: 70, v2: 30}"))
    dry = served.json("apply", "-f", str(new), "--dry-run")
    assert dry["ok"] and not dry["applied"] and dry["version"] == before
    applied = served.json("apply", "-f", str(new))
    assert applied["applied"] and int(applied["version"]) == int(before) + 1
    assert "{v1: 70, v2: 30}" in served.json("get")["mesh_yaml"]

    new.write_text(default_mesh_text().replace("lb: round_robin", "lb: fastest"))
    refused = served.meshctl("apply", "-f", str(new))
    assert refused.returncode == 1
    assert "services[0].policy.lb: 'fastest' is not one of" in refused.stdout
    assert served.json("status")["version"] == applied["version"]
    from_stdin = served.meshctl("-o", "json", "validate", "-f", "-", stdin=default_mesh_text())
    assert from_stdin.returncode == 0 and json.loads(from_stdin.stdout)["ok"]


def test_split_changes_the_served_weights(served: Served) -> None:
    shifted = served.json("split", "hello", "v1=25", "v2=75")
    assert shifted["ok"] and shifted["applied"]
    assert "v1: 25" in served.json("get")["mesh_yaml"]
    assert served.json("status")["source"] == "shift"
    bad = served.meshctl("split", "hello", "v1=lots")
    assert bad.returncode == 2 and "write VERSION=WEIGHT" in bad.stderr
    unknown = served.meshctl("split", "hello", "v7=1")
    assert unknown.returncode == 1 and "no version 'v7'" in unknown.stdout


def test_without_a_token_meshctl_exits_3_with_the_reason(served: Served) -> None:
    done = served.meshctl("status", token=False)
    assert done.returncode == 3 and "UNAUTHENTICATED" in done.stderr


def test_the_mesh_file_is_hot_reloaded_and_a_bad_edit_keeps_the_last_good_config(served: Served) -> None:
    version = int(served.json("status")["version"])
    served.mesh.write_text(default_mesh_text().replace("{v1: 90, v2: 10}", "{v1: 5, v2: 95}"))
    until(lambda: int(served.json("status")["version"]) > version, "the reload")
    status = served.json("status")
    assert status["source"] == f"file:{served.mesh}" and "{v1: 5, v2: 95}" in served.json("get")["mesh_yaml"]
    events = subprocess.Popen(
        [
            *(sys.executable, "-m", "controlplane.meshctl", "--server", served.address),
            *("--token-file", str(served.token_file), "-o", "json", "events"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        rejected = _rejection(served.mesh, events)
    finally:
        events.terminate()
        events.wait(timeout=30)
    assert rejected["version"] == status["version"] and "not valid YAML" in rejected["message"]
    assert served.json("status")["version"] == status["version"]
    metrics = urllib.request.urlopen(f"http://{served.admin}/metrics", timeout=10).read().decode()
    assert "controlplane_xds_nodes_nacking" in metrics
    assert urllib.request.urlopen(f"http://{served.admin}/ready", timeout=10).status == 200
