"""The interception benchmark runs in real pods: a bounded round of each path, and what it crossed.

``benchmarks.interception`` builds pods A and B, installs ``meshproxy iptables`` in both and runs
the sidecar pair as uid 1337. Here: the intercepted path's requests really cross A's 15001
listener and B's 15006 listener over X25519MLKEM768 (the sidecars' own stats, read in the pods);
one short round of the whole scenario measures both paths with no failed request, computes every
paired comparison and leaves no namespace behind; run without root, the scenario is skipped with
its reason and nothing crashes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import interception, runner
from controlplane.demo.pods import PREFIX, SIDECAR_UID, Pod

REPO = Path(__file__).resolve().parents[2]
SHORT = runner.Settings(rounds=1, duration_s=1, warmup_s=0, cpu_proxy=1, cpu_load=0)


def stat(pod: Pod, family: str, **labels: str) -> float:
    """``meshproxy_<family>`` with exactly ``labels`` (in any order) from the sidecar in ``pod``."""
    text = pod.run("curl", "-s", f"http://127.0.0.1:{interception.ADMIN}/stats/prometheus").stdout
    for found in re.finditer(rf"(?m)^meshproxy_{family}\{{(.*)\}} (\S+)$", text):
        if dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == labels:
            return float(found.group(2))
    raise AssertionError(f"{family}{labels} not in pod {pod.name}'s stats")


def namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [name for name in listed.split() if name.startswith(PREFIX)]


def test_the_intercepted_path_crosses_15001_and_15006_over_pq_mtls() -> None:
    path = runner.Path("intercepted", "intercepted")
    with interception.PODS.start(path, SHORT) as live:
        pods = interception.PODS.live
        assert pods is not None and pods.url == f"http://{interception.VIP}:{interception.SERVICE_PORT}/"
        metrics = interception.PODS.load(1)(SHORT, live.port)
        assert metrics["requests"] > 0 and metrics["errors"] == 0
        a, b = pods.a, pods.b
        n = metrics["requests"]
        assert stat(a, "http_downstream_rq_total", stat_prefix="outbound_hello") >= n
        assert stat(a, "http_downstream_rq_total", stat_prefix="explicit") < n  # the readiness probe only
        assert stat(b, "http_downstream_rq_total", stat_prefix="inbound_8080") >= n
        assert stat(b, "listener_downstream_cx_total", listener="virtualInbound") >= 1
        handshakes = stat(
            b, "listener_ssl_handshakes_by_group_total", listener="virtualInbound", group="X25519MLKEM768"
        )
        assert handshakes >= 1
    assert interception.PODS.live is None
    assert namespaces() == []


def test_one_short_round_measures_both_paths_and_leaves_no_pods() -> None:
    lines: list[str] = []
    result = runner.run_scenario(interception.SCENARIO, SHORT, log=lines.append)
    assert result["skipped"] == {}, lines
    measured = {(r["path"], r["measurement"]): r for r in result["runs"]}
    assert set(measured) == {(p, m) for p in ("explicit", "intercepted") for m in ("saturate", "serial")}
    for run in measured.values():
        assert runner.invalid_reason(run) is None, run
        assert run["metrics"]["requests"] > 0 and run["metrics"]["proxy_cpu_us_per_req"] > 0
    computed = {(c["row"], c["kind"]) for c in result["comparison_results"]}
    assert computed == {(c.row, c.kind) for c in interception.SCENARIO.comparisons}
    assert namespaces() == []


def test_without_root_the_scenario_is_skipped_with_its_reason() -> None:
    script = (
        "import json\n"
        "from benchmarks import interception, runner\n"
        "s = runner.Settings(rounds=1, duration_s=1, warmup_s=0, cpu_proxy=1, cpu_load=0)\n"
        "r = runner.run_scenario(interception.SCENARIO, s, log=lambda line: None)\n"
        "print(json.dumps({'skipped': r['skipped'], 'runs': len(r['runs'])}))\n"
    )
    as_user = ["setpriv", f"--reuid={SIDECAR_UID}", f"--regid={SIDECAR_UID}", "--clear-groups"]
    done = subprocess.run(
        [*as_user, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reason = interception.ROOT_REASON
    assert json.loads(done.stdout) == {"skipped": {"explicit": reason, "intercepted": reason}, "runs": 0}
