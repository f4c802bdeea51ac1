"""The TLS and mesh-path configurations the benchmarks generate (pure functions; nothing runs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks import mesh_path, targets, tls_hop

CERTS = {
    k: Path(f"/c/{k}.pem")
    for k in (
        "ca",
        "client_cert",
        "client_key",
        "client_combined",
        "server_cert",
        "server_key",
        "server_combined",
    )
}


def _load(doc: str) -> dict:
    return yaml.safe_load(doc)["static_resources"]


def test_meshproxy_tls_listener_prefers_the_hybrid_group() -> None:
    ctx = tls_hop.common_tls_context(CERTS["server_cert"], CERTS["server_key"], tls_hop.PREFERRED_CURVES)
    res = _load(tls_hop.meshproxy_tls_bootstrap(1, 2, 3, listener_tls=tls_hop.downstream_tls(ctx)))
    typed = res["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert typed["@type"] == tls_hop.DOWNSTREAM
    assert "require_client_certificate" not in typed
    params = typed["common_tls_context"]["tls_params"]
    assert params["ecdh_curves"] == ["X25519MLKEM768", "X25519"]
    assert "validation_context" not in typed["common_tls_context"]
    assert "transport_socket" not in res["clusters"][0]


def test_meshproxy_pair_is_mutual_tls_with_san_matches() -> None:
    a, b = mesh_path.meshproxy_pair_bootstraps(10, 20, 30, (11, 21), CERTS, "X25519MLKEM768")
    a_res, b_res = _load(a), _load(b)
    assert "transport_socket" not in a_res["listeners"][0]["filter_chains"][0]
    up = a_res["clusters"][0]["transport_socket"]["typed_config"]
    assert up["@type"] == tls_hop.UPSTREAM
    assert (
        a_res["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]["port_value"]
        == 20
    )
    assert up["common_tls_context"]["tls_params"]["ecdh_curves"] == ["X25519MLKEM768"]
    san = up["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert san == [{"san_type": "URI", "matcher": {"exact": tls_hop.SERVER_ID}}]
    down = b_res["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert down["require_client_certificate"] is True
    assert down["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0][
        "matcher"
    ] == {"exact": tls_hop.CLIENT_ID}
    assert b_res["listeners"][0]["address"]["socket_address"]["port_value"] == 20


def test_haproxy_and_nginx_tls_configs() -> None:
    h = tls_hop.haproxy_tls_config(1, 2, Path("/c/combined.pem"))
    assert "bind 127.0.0.1:1 ssl crt /c/combined.pem" in h and "nbthread 1" in h
    n = tls_hop.nginx_tls_config(1, 2, Path("/p"), Path("/c/cert.pem"), Path("/c/key.pem"))
    assert "listen 127.0.0.1:1 ssl;" in n and "ssl_certificate /c/cert.pem;" in n
    assert "worker_processes 1;" in n


def test_haproxy_pair_verifies_both_ways() -> None:
    a, b = mesh_path.haproxy_pair_configs(10, 20, 30, CERTS)
    assert "server s1 127.0.0.1:20 ssl crt /c/client_combined.pem ca-file /c/ca.pem verify required" in a
    assert "bind 127.0.0.1:10\n" in a
    assert "bind 127.0.0.1:20 ssl crt /c/server_combined.pem ca-file /c/ca.pem verify required" in b
    assert "server s1 127.0.0.1:30\n" in b


def test_group_argv_and_wrk_argv() -> None:
    argv = targets.group_argv([["a", "x y"], ["b"]])
    assert argv[:2] == ["sh", "-c"]
    assert "a 'x y' & p0=$!;" in argv[2] and "b & p1=$!;" in argv[2] and "kill $p0 $p1" in argv[2]
    w = tls_hop.wrk_argv("https://h/", 50, 3, 0, Path("/s.lua"), ("Connection: close",))
    assert w[:3] == ["taskset", "-c", "0"] and w[-3:] == ["-H", "Connection: close", "https://h/"]


def test_scenarios_registered() -> None:
    from benchmarks.__main__ import SCENARIOS

    assert {"tls_hop", "mesh_path"} <= set(SCENARIOS)
    for name in ("meshproxy-tls", "haproxy-tls", "nginx-tls", "meshproxy-pair", "haproxy-pair"):
        assert name in targets.EXTRA_TARGETS
