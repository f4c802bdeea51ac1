"""RBAC micro-benchmark (issue 15): the CPU an RBAC filter adds to one request, in the engine.

``python -m benchmarks.rbac_micro [--seconds S] [--repeat N]`` prints microseconds per request for
what the HTTP filter does per request (build the request's ``Facts``, run ``RbacRuntime.check``)
with five ALLOW policies shaped like Istio's (a path prefix and a ``:method`` permission; an
authenticated SPIFFE ID, an IP range, or meshproxy's TLS principal), for three requests:

- ``first``: allowed by the first policy (the common case: a policy per caller, the caller found);
- ``last``: allowed by the last policy (every policy before it evaluated and missed);
- ``denied``: matched by none (all five evaluated, 403), and the same with shadow rules added.

The baseline, the same request without RBAC, costs nothing here: without the filter configured
no code runs (the filter chain is empty), so these figures are the whole difference. Figures are
medians of ``--repeat`` rounds. Owns no product logic.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from google.protobuf import json_format

from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_rbac import TLS_PRINCIPAL_URL, http_filter
from meshproxy.identity.certs import generate_ca, generate_key, issue_svid
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.rbac.engine import Facts
from meshproxy.rbac.runtime import RbacRuntime
from meshproxy.stats import Store
from meshproxy.tls.engine import Negotiated

TD = "spiffe://mesh.local/ns/default/sa"
HEADERS = [
    (b"host", b"api.default.svc"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"x-request-id", b"5f1c2a0e-6b7d-4f1e-9a51-0d6c3e2b7a10"),
    (b"content-type", b"application/json"),
]


def _policy(prefix: str, method: str, principal: dict[str, Any]) -> dict[str, Any]:
    permission = {
        "and_rules": {
            "rules": [
                {"url_path": {"path": {"prefix": prefix}}},
                {"header": {"name": ":method", "string_match": {"exact": method}}},
            ]
        }
    }
    return {"permissions": [permission], "principals": [principal]}


def _caller(name: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": f"{TD}/{name}"}}}


POLICIES = {
    "1-web": _policy("/api/", "GET", _caller("web")),
    "2-batch": _policy("/api/jobs", "POST", _caller("batch")),
    "3-ops": _policy(
        "/admin/", "GET", {"direct_remote_ip": {"address_prefix": "10.20.0.0", "prefix_len": 16}}
    ),
    "4-metrics": _policy("/metrics", "GET", _caller("prometheus")),
    "5-pq": _policy(
        "/export/",
        "GET",
        {
            "custom": {
                "name": "meshproxy.rbac.tls_principal",
                "typed_config": {"@type": TLS_PRINCIPAL_URL, "groups": ["X25519MLKEM768"]},
            }
        },
    ),
}


def runtime(shadow: bool = False) -> RbacRuntime:
    doc: dict[str, Any] = {"rules": {"action": "ALLOW", "policies": POLICIES}}
    if shadow:
        doc["shadow_rules"] = {"action": "DENY", "policies": POLICIES}
    problems: list[str] = []
    config = http_filter(json_format.ParseDict(doc, http_rbac.RBAC()), Ctx("rbac", problems))
    assert config is not None, problems
    return RbacRuntime.counted(config, Store(), "http.bench.")


def negotiated(identity: str) -> Negotiated:
    now = datetime.now(UTC)
    ca = generate_ca("mesh.local", now=now)
    key = generate_key()
    cert = issue_svid(
        ca, key.public_key(), SpiffeId.parse(identity), not_before=now, not_after=now + timedelta(hours=1)
    )
    return Negotiated(
        "TLSv1.3",
        "X25519MLKEM768",
        "TLS_AES_256_GCM_SHA384",
        "ecdsa_secp256r1_sha256",
        None,
        (cert,),
        (identity,),
        "",
        False,
    )


def per_request_us(rbac: RbacRuntime, tls: Negotiated, target: bytes, method: bytes, seconds: float) -> float:
    """Microseconds per request of building the request's facts and checking them."""
    check = rbac.check
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            check(
                Facts(
                    peer="10.1.0.7",
                    local="10.1.0.9",
                    local_port=8080,
                    tls=tls,
                    headers=HEADERS,
                    method=method,
                    target=target,
                    authority=b"api.default.svc",
                )
            )
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    web, pq = negotiated(f"{TD}/web"), negotiated(f"{TD}/exporter")
    cases = {
        "first (allowed by policy 1 of 5)": (runtime(), web, b"/api/items?page=2", b"GET"),
        "last (allowed by policy 5 of 5)": (runtime(), pq, b"/export/all", b"GET"),
        "denied (no policy matches: 403)": (runtime(), web, b"/private", b"GET"),
        "denied, with shadow rules": (runtime(shadow=True), web, b"/private", b"GET"),
    }
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, (rbac, tls, target, method) in cases.items():
            rounds[name].append(per_request_us(rbac, tls, target, method, args.seconds))
    extensions = "off" if os.environ.get("MESHPROXY_NO_EXTENSIONS") else "on"
    print(f"# RBAC per request, 5 policies; Python {platform.python_version()}, extensions {extensions}")
    print(f"# medians of {args.repeat} rounds of {args.seconds}s; baseline without RBAC: 0 (no filter runs)")
    for name, values in rounds.items():
        print(f"{name:36} {statistics.median(values):6.2f} us  ({min(values):.2f}-{max(values):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
