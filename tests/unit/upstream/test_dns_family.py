"""Which resolved addresses a DNS cluster uses under each of Envoy's dns_lookup_family values."""

from __future__ import annotations

import pytest

from meshproxy.upstream.manager import lookup_family_addresses

V4, V4B, V6, V6B = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"


@pytest.mark.parametrize(
    ("family", "addresses", "expected"),
    [
        pytest.param("AUTO", [V4, V6, V4B, V6B], [V6, V6B], id="auto-prefers-v6"),
        pytest.param("AUTO", [V4, V4B, V4], [V4, V4B], id="auto-falls-back-to-v4"),
        pytest.param("V4_PREFERRED", [V6, V4, V6B], [V4], id="v4-preferred"),
        pytest.param("V4_PREFERRED", [V6, V6B], [V6, V6B], id="v4-preferred-falls-back"),
        pytest.param("ALL", [V6, V4, V6], [V6, V4], id="all-distinct-in-order"),
        pytest.param("V4_ONLY", [V4, V4B], [V4, V4B], id="v4-only-asked-of-the-resolver"),
        pytest.param("AUTO", [], [], id="nothing"),
    ],
)
def test_lookup_family_addresses(family: str, addresses: list[str], expected: list[str]) -> None:
    assert lookup_family_addresses(addresses, family) == expected
