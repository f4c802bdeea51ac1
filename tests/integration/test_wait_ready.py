"""``meshproxy wait-ready`` against real proxies: 0 once ready (also when started before the
proxy, as an entrypoint wrapper is), 1 at the timeout with the last answer or error seen (a
proxy that never gets its configuration, nothing listening, a server that never answers), 2 for
a bad URL. Every run is the real command in a child process, bounded by a subprocess timeout
well above its own ``--timeout``, so a hang fails the test."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest

from .harness import bootstrap, cluster, free_port, http_listener, proxy_process, route
from .test_xds_client import xds_bootstrap

WAIT_READY = [sys.executable, "-m", "meshproxy", "wait-ready"]
BOUND = 30  # seconds any one command may take here


def wait_ready(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WAIT_READY, *args], capture_output=True, text=True, timeout=BOUND, check=False)


def served_doc() -> dict[str, object]:
    return bootstrap([http_listener([route()])], [cluster("backend", 9)])


def test_exits_0_when_the_proxy_is_ready(tmp_path: pathlib.Path) -> None:
    with proxy_process(served_doc(), tmp_path, args=("--ready-port", "0")) as proc:
        port = proc.status["/healthz/ready"]
        done = wait_ready("--port", str(port), "--timeout", "10")
        assert (done.returncode, done.stderr) == (0, "")
        done = wait_ready("--url", f"http://127.0.0.1:{port}/healthz/ready", "--timeout", "10")
        assert done.returncode == 0


def test_started_before_the_proxy_it_exits_0_once_the_proxy_is_ready(tmp_path: pathlib.Path) -> None:
    port = free_port()
    waiter = subprocess.Popen(
        [*WAIT_READY, "--port", str(port), "--timeout", str(BOUND - 5), "--interval", "0.05"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=0.5)  # nothing to be ready yet: it keeps waiting
        with proxy_process(served_doc(), tmp_path, args=("--ready-port", str(port))):
            assert waiter.wait(timeout=BOUND) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()


def test_a_proxy_without_its_configuration_times_out_with_the_last_answer(tmp_path: pathlib.Path) -> None:
    doc = xds_bootstrap(free_port())  # an ADS server nobody runs: never a first configuration
    with proxy_process(
        doc, tmp_path, args=("--sidecar", "--ready-port", "0", "--prometheus-port", "0"), ready=False
    ) as proc:
        port = proc.status["/healthz/ready"]
        done = wait_ready("--port", str(port), "--timeout", "1", "--interval", "0.1")
        assert done.returncode == 1
        url = f"http://127.0.0.1:{port}/healthz/ready"
        assert done.stderr == f"meshproxy wait-ready: {url} not ready after 1s; last: 503 NOT READY\n"
        assert proc.proc.poll() is None


def test_nothing_listening_times_out_with_the_connection_error() -> None:
    port = free_port()
    done = wait_ready("--port", str(port), "--timeout", "0.5")
    assert done.returncode == 1
    assert done.stderr.endswith("not ready after 0.5s; last: Connection refused\n"), done.stderr


def test_a_server_that_never_answers_cannot_hold_it_past_the_timeout() -> None:
    with socket.socket() as silent:  # the kernel completes the handshake; nobody ever reads
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        done = wait_ready("--port", str(port), "--timeout", "1")
    assert done.returncode == 1
    assert done.stderr.endswith("not ready after 1s; last: no answer\n"), done.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1:15021/healthz/ready", "only http:// URLs are supported"),
        ("http://127.0.0.1:99999/healthz/ready", "bad port"),
        ("http:///healthz/ready", "no host"),
    ],
)
def test_a_bad_url_is_a_usage_error(url: str, why: str) -> None:
    done = wait_ready("--url", url, "--timeout", "1")
    assert done.returncode == 2
    assert done.stderr.startswith(f"meshproxy wait-ready: --url {url!r}: {why}"), done.stderr
