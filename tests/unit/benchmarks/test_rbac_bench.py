"""The RBAC benchmarks measure what they say: the filters_cost bootstrap compiles in the proxy
with the RBAC filter before the router, and its load's request (GET / from loopback) misses the
first four policies and is allowed by the fifth; rbac_micro's cases decide as they are named."""

from __future__ import annotations

import json

import yaml

from benchmarks import filters_cost, rbac_micro
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import HttpConnectionManager
from meshproxy.rbac.engine import Facts
from meshproxy.rbac.model import RbacFilter
from meshproxy.rbac.runtime import RbacRuntime
from meshproxy.stats import Store
from meshproxy.tls.engine import Negotiated


def test_filters_cost_request_evaluates_all_five_policies_and_is_allowed() -> None:
    config = parse_bootstrap(json.dumps(yaml.safe_load(filters_cost.rbac_bootstrap(1, 2, 3))), source="bench")
    manager = config.listeners[0].filter_chains[0].filter
    assert isinstance(manager, HttpConnectionManager)
    [rbac] = [f.config for f in manager.http_filters]
    assert isinstance(rbac, RbacFilter) and rbac.rules is not None
    assert [p.name for p in rbac.rules.policies] == ["1-web", "2-batch", "3-ops", "4-metrics", "5-local"]
    runtime = RbacRuntime.counted(rbac, Store())
    facts = Facts(
        peer="127.0.0.1", local="127.0.0.1", local_port=1, tls=None, headers=[], method=b"GET", target=b"/"
    )
    assert runtime.engine is not None and runtime.engine.allows(facts) == (True, "5-local")


def test_rbac_micro_cases_decide_as_named() -> None:
    web, exporter = (
        rbac_micro.negotiated(f"{rbac_micro.TD}/web"),
        rbac_micro.negotiated(f"{rbac_micro.TD}/exporter"),
    )
    engine = rbac_micro.runtime().engine
    assert engine is not None

    def decide(tls: Negotiated, target: bytes) -> tuple[bool, str | None]:
        facts = Facts(
            peer="10.1.0.7", local="", local_port=8080, tls=tls, headers=[], method=b"GET", target=target
        )
        return engine.allows(facts)

    assert decide(web, b"/api/items?page=2") == (True, "1-web")
    assert decide(exporter, b"/export/all") == (True, "5-pq")
    assert decide(web, b"/private") == (False, None)
