"""The shell that reads and writes a network namespace's ``nat`` tables.

Owns running ``iptables-save`` / ``iptables-restore --noflush`` (and their ``ip6tables``
twins) and the order of the two families: one atomic transaction per family, IPv4 first; when
the IPv6 transaction fails, the IPv4 table is put back as it was before, so a failure leaves
the namespace unchanged. Holds no rule policy: what to install comes from ``iptables.py``.
Must not depend on the proxy's runtime.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from meshproxy.sidecar.errors import CaptureError
from meshproxy.sidecar.iptables import Family, Ruleset, ours, transaction

COMMAND_TIMEOUT = 30.0


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise CaptureError(f"{argv[0]} not found: install the Debian package iptables") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"{argv[0]} did not finish within {COMMAND_TIMEOUT:g}s") from None
    if done.returncode != 0:
        raise CaptureError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def installed(family: Family) -> Ruleset:
    """Our rules in ``family``'s nat table now (``-t nat``: listing never creates the table)."""
    return ours(_run([f"{family.command}-save", "-t", "nat"]))


def _restore(family: Family, current: Ruleset, desired: Ruleset) -> bool:
    """Apply one family's transaction; False when there was nothing to change."""
    text = transaction(current, desired)
    if text is None:
        return False
    _run([f"{family.command}-restore", "--noflush"], stdin=text)
    return True


def converge(targets: Mapping[Family, Ruleset]) -> list[Family]:
    """Make each family's nat table hold exactly ``targets[family]`` of ours, all or nothing.

    Returns the families that changed. On a failure after an earlier family changed, that
    family is restored to what it held before and the error says so.
    """
    before = {family: installed(family) for family in targets}
    changed: list[Family] = []
    for family, desired in targets.items():
        try:
            if _restore(family, before[family], desired):
                changed.append(family)
        except CaptureError as exc:
            raise CaptureError(f"{exc}{_roll_back(changed, targets, before)}") from None
    return changed


def _roll_back(
    changed: list[Family], targets: Mapping[Family, Ruleset], before: Mapping[Family, Ruleset]
) -> str:
    """Put the families that changed back as they were; what happened, for the error message."""
    notes = []
    for family in changed:
        try:
            _restore(family, targets[family], before[family])
            notes.append(f"; {family.command} rules rolled back")
        except CaptureError as exc:
            notes.append(f"; rolling back {family.command} failed too: {exc}")
    return "".join(notes)
