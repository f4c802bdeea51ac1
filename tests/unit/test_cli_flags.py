"""``meshproxy run``'s sidecar flags as parsed: the status ports ``--sidecar`` implies, and the
duration and port values it accepts or refuses (exit code 2, the flag named)."""

from __future__ import annotations

import pytest

from meshproxy.cli import _parser, status_ports


def parsed(*flags: str) -> tuple[int | None, int | None]:
    return status_ports(_parser().parse_args(["run", "-c", "b.yaml", *flags]))


@pytest.mark.parametrize(
    ("flags", "ports"),
    [
        ((), (None, None)),
        (("--sidecar",), (15021, 15090)),
        (("--sidecar", "--ready-port", "0"), (0, 15090)),
        (("--sidecar", "--prometheus-port", "9100"), (15021, 9100)),
        (("--ready-port", "8021"), (8021, None)),
    ],
)
def test_sidecar_presets_istios_ports_unless_given(
    flags: tuple[str, ...], ports: tuple[int | None, ...]
) -> None:
    assert parsed(*flags) == ports


@pytest.mark.parametrize(
    ("text", "seconds"), [("5", 5.0), ("5s", 5.0), ("0.5s", 0.5), ("250ms", 0.25), ("0", 0.0)]
)
def test_durations_in_seconds_or_istios_form(text: str, seconds: float) -> None:
    args = _parser().parse_args(
        ["run", "-c", "b", "--termination-drain-duration", text, "--drain-quiet", text]
    )
    assert args.termination_drain_duration == args.drain_quiet == seconds


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--termination-drain-duration", "-1"),
        ("--termination-drain-duration", "5m"),
        ("--drain-quiet", "nan"),
        ("--drain-quiet", "inf"),
        ("--ready-port", "65536"),
        ("--prometheus-port", "-1"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["run", "-c", "b", flag, value])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err
