"""Folding the workers' stats and ``/clusters`` answers into one proxy's (``workers/aggregate.py``)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

from meshproxy.stats import Store
from meshproxy.workers.aggregate import merge_clusters, merge_stores


def worker_store(requests: int, active: int, latency_ms: float, membership: int) -> Store:
    store = Store()
    http = store.http_stats("ingress")
    http.downstream_rq_total = requests
    http.downstream_rq_active = active
    http.downstream_rq_xx[2] = requests
    for _ in range(requests):
        http.downstream_rq_time.observe(latency_ms)
    cluster = store.cluster_stats("backend")
    cluster.membership_total = membership
    cluster.remaining_rq = 10
    # a counter kept by a second label
    cluster.outlier_detection_ejections_by_kind["consecutive_5xx"] = requests
    store.server["live"] = 1
    return store


def through_pickle(store: Store) -> Store:
    """What the supervisor receives: a copy, as the channel carries it."""
    copied: Store = pickle.loads(pickle.dumps(store))
    return copied


def test_counters_and_histograms_sum_gauges_follow_their_rule() -> None:
    a, b = through_pickle(worker_store(3, 1, 2.0, 2)), through_pickle(worker_store(5, 2, 30.0, 2))
    merged = merge_stores([a, b], {"live": 1, "draining": 0, "worker_restarts": 4})
    http = merged.http["ingress"]
    assert http.downstream_rq_total == 8
    assert http.downstream_rq_active == 3  # requests in progress: summed
    assert http.downstream_rq_xx == [0, 0, 8, 0, 0, 0]
    assert http.downstream_rq_time.count == 8
    assert http.downstream_rq_time.sum == 3 * 2.0 + 5 * 30.0
    cluster = merged.cluster["backend"]
    assert cluster.membership_total == 2  # each worker's copy of one cluster: not 4
    assert cluster.remaining_rq == 20  # each worker has its own breakers
    assert cluster.outlier_detection_ejections_by_kind == {"consecutive_5xx": 8}
    assert merged.server == {"live": 1, "draining": 0, "worker_restarts": 4}


def test_an_entry_only_one_worker_has_is_kept() -> None:
    a = worker_store(1, 0, 1.0, 1)
    b = Store()
    b.listener_stats("late").downstream_cx_total = 7
    merged = merge_stores([a, b], {})
    assert merged.listener["late"].downstream_cx_total == 7
    assert merged.http["ingress"].downstream_rq_total == 1


def cluster_answer(rq: int, ejected: bool) -> list[dict[str, Any]]:
    host = {
        "address": "10.0.0.1:80",
        "weight": 3,
        "rq_total": rq,
        "rq_active": 1,
        "cx_active": 2,
        "cx_idle": 1,
    }
    host |= {"ejected": ejected, "num_ejections": int(ejected)}
    return [
        {
            "name": "backend",
            "upstream_rq_total": rq,
            "upstream_rq_active": 1,
            "upstream_cx_active": 2,
            "upstream_cx_connect_fail": 0,
            "priority_load": [100],
            "hosts": [host],
        }
    ]


def test_clusters_sum_counts_and_keep_the_first_workers_shape() -> None:
    answers = [cluster_answer(4, False), cluster_answer(6, True)]
    [backend] = merge_clusters(copy.deepcopy(answers))
    assert (backend["upstream_rq_total"], backend["upstream_rq_active"], backend["upstream_cx_active"]) == (
        10,
        2,
        4,
    )
    assert backend["priority_load"] == [100]
    [host] = backend["hosts"]
    assert (host["rq_total"], host["cx_active"], host["cx_idle"], host["weight"]) == (10, 4, 2, 3)
    assert host["ejected"] is True and host["num_ejections"] == 1
    assert merge_clusters([]) == []
