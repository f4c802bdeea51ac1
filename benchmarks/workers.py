"""Scenario: ``meshproxy run --concurrency 2`` against ``--concurrency 1``, same load generator.

The scenario 1 job (HTTP/1.1, plaintext, 64-byte responses, ``wrk -t1 -c50`` saturating and
``wrk -t1 -c1`` serial) through a proxy allowed every core of the machine, with 1 and with 2
worker processes (``docs/workers.md``): both paths get the same cores (``taskset`` over the
runner's pin), so the only difference is the worker count. The proxy CPU per request covers
the supervisor and its workers (the runner reads a process and its direct children). The load
generator and the upstream stay on ``--cpu-load``: on a 2-core machine the second worker shares
that core with them, which the figures include.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path as FsPath

from benchmarks import cli, targets
from benchmarks.runner import Path, Scenario, Timing, pairwise, saturating_and_serial

CONNECTIONS = 50


def _meshproxy(concurrency: int) -> targets.ExtraTarget:
    def command(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Callable[[], bool]]:
        port, admin_port = targets.free_port(), targets.free_port()
        conf = workdir / "bootstrap.yaml"
        conf.write_text(targets.meshproxy_bootstrap(port, upstream_port, admin_port))
        cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        argv = ["taskset", "-c", cores, *targets.meshproxy_argv("run", "-c", str(conf))]
        argv += ["--concurrency", str(concurrency)]

        def ready() -> bool:
            return targets.http_ok(admin_port, "/ready") and targets.port_open(port)

        return [argv], port, ready

    return command


targets.register("meshproxy-c1", _meshproxy(1))
targets.register("meshproxy-c2", _meshproxy(2))

SCENARIO = Scenario(
    name="workers",
    title="Workers: --concurrency 2 against 1, HTTP/1.1 plaintext, 64-byte responses",
    paths=(Path("meshproxy-c1", "meshproxy-c1"), Path("meshproxy-c2", "meshproxy-c2")),
    measurements=saturating_and_serial(CONNECTIONS),
    comparisons=pairwise(
        [("meshproxy-c2", "meshproxy-c1")],
        (("saturating req/s", "saturate", "rps"), ("serial p50", "serial", "p50_ms")),
    ),
    quick=Timing(rounds=1, duration_s=3),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Both paths may use every core; the load generator and the upstream are pinned to "
        "--cpu-load, so with 2 cores the second worker competes with them."
    ),
    filter_targets=False,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["workers"]))
