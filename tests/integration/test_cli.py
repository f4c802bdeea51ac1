"""The ``meshproxy`` command: validate, run's refusals, and its exit codes (0, 1, 2, 3).

Each case runs the real command in a child process, both as the console script and as
``python -m meshproxy``. A ``run`` that would start serving is outside this file: it never
returns on its own (see test_drain.py and test_admin.py for the process that serves).
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
from typing import Any

import pytest

from .harness import addr, bootstrap, cluster, free_port, http_listener, route

COMMANDS = {
    "console_script": [str(pathlib.Path(sys.executable).with_name("meshproxy"))],
    "python_m": [sys.executable, "-m", "meshproxy"],
}


@pytest.fixture(params=sorted(COMMANDS))
def meshproxy(request: pytest.FixtureRequest) -> list[str]:
    return COMMANDS[request.param]


def run(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, check=False)


def write(tmp_path: pathlib.Path, doc: dict[str, Any], name: str = "bootstrap.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def fixed_port_bootstrap(port: int, admin_port: int) -> dict[str, Any]:
    listener = http_listener([route()])
    listener["address"] = addr("127.0.0.1", port)
    doc = bootstrap([listener], [cluster("backend", 9)])
    doc["admin"] = {"address": addr("127.0.0.1", admin_port)}
    return doc


def bad_bootstrap(port: int) -> dict[str, Any]:
    """Three independent problems, each at a known field path; the listener itself is valid."""
    listener = http_listener([route(cluster="missing")])
    listener["address"] = addr("127.0.0.1", port)
    broken = cluster("broken", 70000, connect_timeout="-1s")
    return bootstrap([listener], [broken, cluster("backend", 9)])


BAD_PATHS = (
    "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"
    ".socket_address.port_value",
    "static_resources.clusters[0].connect_timeout",
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]"
    ".routes[0].route.cluster",
)


def is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_validate_good_file(meshproxy: list[str], tmp_path: pathlib.Path) -> None:
    result = run(meshproxy, "validate", "-c", write(tmp_path, fixed_port_bootstrap(0, 0)))
    assert result.returncode == 0, result.stderr
    assert "OK (1 listener(s), 1 cluster(s))" in result.stdout


def test_validate_bad_file_lists_every_problem(meshproxy: list[str], tmp_path: pathlib.Path) -> None:
    result = run(meshproxy, "validate", "-c", write(tmp_path, bad_bootstrap(0)))
    assert result.returncode == 1
    assert "invalid (3 problems)" in result.stderr
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert len(problems) == 3, result.stderr
    for path in BAD_PATHS:
        assert any(path in p for p in problems), f"no problem names {path}:\n{result.stderr}"


def test_validate_reports_every_parse_level_problem_naming_the_file_once(
    meshproxy: list[str], tmp_path: pathlib.Path
) -> None:
    """Issue 11, defect 11: the first parse error only, in Python's words, the file named twice."""
    doc = fixed_port_bootstrap(0, 0)
    listener, backend = doc["static_resources"]["listeners"][0], doc["static_resources"]["clusters"][0]
    listener["address"]["socket_address"]["port_value"] = "abc"
    backend["connect_timeout"] = "5m"
    backend["lb_policy"] = "ROUND_ROBN"
    backend["conect_timeout"] = "1s"
    path = write(tmp_path, doc)
    result = run(meshproxy, "validate", "-c", path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: invalid (4 problems):"
    assert result.stderr.count(path) == 1
    problems = sorted(line.strip() for line in lines[1:])
    assert problems == [
        'static_resources.clusters[0].conect_timeout: unknown field: Cluster has no field "conect_timeout"; '
        'did you mean "connect_timeout"?',
        'static_resources.clusters[0].connect_timeout: "5m" is not a duration in seconds with an "s": '
        '"300s", "0.25s"',
        'static_resources.clusters[0].lb_policy: unknown value "ROUND_ROBN"; expected one of ROUND_ROBIN, '
        "LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG",
        'static_resources.listeners[0].address.socket_address.port_value: "abc" is not a number',
    ]
    allowed = run(meshproxy, "validate", "--allow-unknown-static-fields", "-c", path)
    assert "invalid (3 problems)" in allowed.stderr and "conect_timeout" not in allowed.stderr


HOSTILE = {
    "alias-bomb.yaml": "\n".join(
        ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    ),
    "deep.json": '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "deep.yaml": "a:\n" + "- " * 10_000 + "1\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_in_one_line(
    meshproxy: list[str], tmp_path: pathlib.Path, command: str, name: str
) -> None:
    """Issue 12, finding 8: an alias bomb spun for minutes; deep nesting ended in a traceback."""
    path = tmp_path / name
    path.write_text(HOSTILE[name])
    result = run(meshproxy, command, "-c", str(path))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"{path}: invalid")
    assert "nested deeper" in result.stderr or "expands to more than" in result.stderr


def test_validate_unreadable_file(meshproxy: list[str], tmp_path: pathlib.Path) -> None:
    result = run(meshproxy, "validate", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "absent.yaml" in result.stderr and "cannot read" in result.stderr


def test_run_bad_file_exits_1_without_binding(meshproxy: list[str], tmp_path: pathlib.Path) -> None:
    port = free_port()
    result = run(meshproxy, "run", "-c", write(tmp_path, bad_bootstrap(port)))
    assert result.returncode == 1
    assert "not starting" in result.stderr
    assert not any(line for line in result.stderr.splitlines() if "ready on" in line)
    assert is_free(port)


def test_run_on_occupied_port_exits_3(meshproxy: list[str], tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin_port = free_port()
        result = run(meshproxy, "run", "-c", write(tmp_path, fixed_port_bootstrap(port, admin_port)))
    assert result.returncode == 3, result.stderr
    assert "cannot start" in result.stderr
    assert str(port) in result.stderr and "in use" in result.stderr
    assert is_free(admin_port), "the admin port must not stay bound after a failed start"


def test_run_on_an_occupied_status_port_exits_3_and_releases_the_rest(
    meshproxy: list[str], tmp_path: pathlib.Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener_port, admin_port = free_port(), free_port()
        doc = write(tmp_path, fixed_port_bootstrap(listener_port, admin_port))
        result = run(meshproxy, "run", "-c", doc, "--prometheus-port", "0", "--ready-port", str(port))
    assert result.returncode == 3, result.stderr
    assert f"cannot start: [Errno 98] status port {port} (/healthz/ready): " in result.stderr
    assert is_free(listener_port) and is_free(admin_port)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1025"])
def test_run_concurrency_must_be_a_worker_count(
    meshproxy: list[str], tmp_path: pathlib.Path, value: str
) -> None:
    result = run(meshproxy, "run", "--concurrency", value, "-c", write(tmp_path, fixed_port_bootstrap(0, 0)))
    assert result.returncode == 2
    assert f"argument --concurrency: '{value}' is not a worker count (1..1024)" in result.stderr


def test_usage_errors_exit_2(meshproxy: list[str]) -> None:
    assert run(meshproxy).returncode == 2
    assert run(meshproxy, "validate").returncode == 2  # -c is required
