"""``python -m benchmarks``: the whole suite, or ``--quick`` for a short one (under 5 minutes).

Adding a scenario: write ``benchmarks/<name>.py`` exposing ``SCENARIO`` (a runner.Scenario) and add
its name here.
"""

from __future__ import annotations

import sys

from benchmarks import cli

SCENARIOS = (
    "http1",
    "openloop_validation",
    "tls_hop",
    "mesh_path",
    "quic",
    "h2",
    "xds",
    "cost",
    "lb",
    "interception",
    "workers",
    "filters_cost",
    "compressor_cost",
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], SCENARIOS))
