"""hcm.grpc: the grpc-timeout header (at most 8 digits and a unit), read and written."""

from __future__ import annotations

import pytest

from meshproxy.hcm.grpc import format_timeout, parse_timeout


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
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"10x", b"-1S", b"123456789S", b"1.5S"])
def test_malformed_values_are_ignored(value: bytes) -> None:
    assert parse_timeout(value) is None


@pytest.mark.parametrize(
    ("seconds", "value"),
    [
        (0.25, b"250m"),
        (0.0001, b"1m"),
        (1.0004, b"1001m"),
        (99_999.999, b"99999999m"),
        (200_000.0, b"200000S"),
    ],
)
def test_written_values_round_up_to_milliseconds(seconds: float, value: bytes) -> None:
    assert format_timeout(seconds) == value
    parsed = parse_timeout(value)
    assert parsed is not None and parsed >= seconds
