"""The crypto inventory (meshproxy/tls/inventory.py): per peer identity, bounded, both directions."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshproxy.tls.engine import Negotiated
from meshproxy.tls.inventory import CryptoInventory, InventoryCollector

A = "spiffe://mesh.local/ns/default/sa/a"
B = "spiffe://mesh.local/ns/shop/sa/b"


def negotiated(peer: str | None, group: str = "X25519MLKEM768", sigalg: str = "mldsa65") -> Negotiated:
    uris = (peer,) if peer else ("https://not-spiffe.example",)
    return Negotiated("TLSv1.3", group, "TLS_AES_128_GCM_SHA256", sigalg, None, (), uris, "", False)


def test_each_peer_keeps_its_combinations_times_and_classical_fallbacks() -> None:
    inventory = CryptoInventory()
    inventory.record(negotiated(A), "inbound", 1000.0)
    inventory.record(negotiated(A), "inbound", 1001.0)
    inventory.record(negotiated(A, "X25519", "ecdsa_secp256r1_sha256"), "outbound", 1002.5)
    inventory.record(negotiated(A, sigalg=""), "outbound", 1003.0)  # resumed: no signature
    inventory.record(negotiated(None), "inbound", 1004.0)  # no SPIFFE ID: not kept
    (peer,) = inventory.as_json()["peers"]
    assert peer["peer"] == A
    assert peer["first_seen"] == "1970-01-01T00:16:40.000Z"
    assert peer["last_seen"] == "1970-01-01T00:16:43.000Z"
    assert peer["groups"] == ["X25519", "X25519MLKEM768"]
    assert peer["signature_algorithms"] == ["ecdsa_secp256r1_sha256", "mldsa65", "resumed"]
    assert peer["tls_versions"] == ["TLSv1.3"]
    assert peer["classical_fallbacks"] == 1
    assert peer["last_classical_fallback"] == "1970-01-01T00:16:42.500Z"
    counts = {
        (c["direction"], c["group"], c["sigalg"]): (c["count"], c["post_quantum"])
        for c in peer["connections"]
    }
    assert counts == {
        ("inbound", "X25519MLKEM768", "mldsa65"): (2, True),
        ("outbound", "X25519", "ecdsa_secp256r1_sha256"): (1, False),
        ("outbound", "X25519MLKEM768", "resumed"): (1, True),
    }


def test_the_least_recently_seen_peer_is_evicted_past_the_limit() -> None:
    inventory = CryptoInventory(limit=2)
    inventory.record(negotiated(A), "inbound", 1.0)
    inventory.record(negotiated(B), "inbound", 2.0)
    inventory.record(negotiated(A), "inbound", 3.0)  # A is now the most recent
    inventory.record(negotiated("spiffe://mesh.local/ns/x/sa/c"), "inbound", 4.0)
    assert [p["peer"] for p in inventory.as_json()["peers"]] == ["spiffe://mesh.local/ns/x/sa/c", A]
    assert inventory.evicted == 1


def test_prometheus_series_sum_the_directions() -> None:
    inventory = CryptoInventory()
    inventory.record(negotiated(A), "inbound", 1.0)
    inventory.record(negotiated(A), "outbound", 2.0)
    inventory.record(negotiated(B, "X25519"), "inbound", 3.0)
    registry = CollectorRegistry()
    registry.register(InventoryCollector(inventory))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    labels = (("group", "X25519MLKEM768"), ("peer", A), ("sigalg", "mldsa65"), ("version", "TLSv1.3"))
    assert samples[("meshproxy_peer_tls_connections_total", labels)] == 2
    assert samples[("meshproxy_peer_tls_classical_fallbacks_total", (("peer", B),))] == 1
    assert samples[("meshproxy_peer_tls_classical_fallbacks_total", (("peer", A),))] == 0
    assert samples[("meshproxy_peer_tls_inventory_evicted_total", ())] == 0
