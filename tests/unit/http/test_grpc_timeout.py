"""codec.grpc_timeout: the grpc-timeout header (at most 8 digits and a unit)."""

from __future__ import annotations

import pytest

from meshproxy.http.codec import grpc_timeout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"5u", 5e-6),
        (b"7n", 7e-9),
        (b"99999999S", 99999999.0),
    ],
)
def test_units(value: bytes, seconds: float) -> None:
    assert grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"10x", b"-1S", b"123456789S", b"1.5S"])
def test_malformed_values_are_ignored(value: bytes) -> None:
    assert grpc_timeout(value) is None
