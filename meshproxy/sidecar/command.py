"""``meshproxy iptables``: its flags (Istio's ``istio-iptables`` letters) and what it prints.

Owns turning the command line into a ``CaptureSpec`` and reporting the outcome: ``--dry-run``
prints the rules in ``iptables-save`` form, ``--cleanup`` removes ours, otherwise the capture
is installed. Exit codes follow ``meshproxy``'s: 0 done, 2 bad flags, 3 the kernel refused.
Must not depend on the proxy's runtime.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from meshproxy.sidecar.errors import CaptureError
from meshproxy.sidecar.iptables import (
    CaptureSpec,
    Family,
    Ruleset,
    parse_cidrs,
    parse_ids,
    parse_ports,
    render,
)
from meshproxy.sidecar.netfilter import converge

# (short flag, long flag, spec field, parser, help): one table, every flag derived from it.
_LISTS = (
    ("-u", "--proxy-uid", "proxy_uids", parse_ids, "uids whose traffic is never captured"),
    ("-g", "--proxy-gid", "proxy_gids", parse_ids, "gids whose traffic is never captured"),
    (
        "-i",
        "--include-outbound-cidrs",
        "include_outbound_cidrs",
        parse_cidrs,
        "destinations captured, or '*'",
    ),
    ("-x", "--exclude-outbound-cidrs", "exclude_outbound_cidrs", parse_cidrs, "destinations never captured"),
    (
        "-q",
        "--include-outbound-ports",
        "include_outbound_ports",
        parse_ports,
        "ports captured whatever the CIDR",
    ),
    (
        "-o",
        "--exclude-outbound-ports",
        "exclude_outbound_ports",
        parse_ports,
        "destination ports never captured",
    ),
    (None, "--include-inbound-cidrs", "include_inbound_cidrs", parse_cidrs, "sources captured, or '*'"),
    (None, "--exclude-inbound-cidrs", "exclude_inbound_cidrs", parse_cidrs, "sources never captured"),
    ("-b", "--include-inbound-ports", "include_inbound_ports", parse_ports, "local ports captured, or '*'"),
    ("-d", "--exclude-inbound-ports", "exclude_inbound_ports", parse_ports, "local ports never captured"),
)
DEFAULTS = CaptureSpec()


def _default_text(field: str) -> str:
    value = getattr(DEFAULTS, field)
    return ",".join(map(str, value)) if isinstance(value, tuple) else value.text()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``iptables`` under the ``meshproxy`` command's subcommands."""
    p = sub.add_parser(
        "iptables",
        help="install (or --cleanup) the transparent capture in this network namespace",
        description="Redirect this network namespace's TCP traffic to the sidecar: outbound to "
        "--outbound-port, inbound to --inbound-port; lists are comma-separated.",
    )
    p.add_argument(
        "-p", "--outbound-port", type=int, default=DEFAULTS.outbound_port, help="default %(default)s"
    )
    p.add_argument(
        "-z", "--inbound-port", type=int, default=DEFAULTS.inbound_port, help="default %(default)s"
    )
    for short, long, field, _, text in _LISTS:
        flags = [short, long] if short else [long]
        default = _default_text(field)
        p.add_argument(*flags, dest=field, default=default, help=f"{text} (default {default!r})")
    p.add_argument("--no-ipv6", action="store_true", help="leave ip6tables alone")
    p.add_argument(
        "--dry-run", action="store_true", help="print the rules (iptables-save form) and change nothing"
    )
    p.add_argument(
        "--cleanup", action="store_true", help="remove meshproxy's rules and chains, and only those"
    )


def spec_from_args(args: argparse.Namespace) -> CaptureSpec:
    """The capture the flags describe; CaptureError names the flag that is wrong."""
    fields: dict[str, Any] = {}
    for flag, field in (("--outbound-port", "outbound_port"), ("--inbound-port", "inbound_port")):
        value = getattr(args, field)
        if not 1 <= value <= 65535:
            raise CaptureError(f"{flag}: {value} is not a TCP port (1-65535)")
        fields[field] = value
    for _, long, field, parse, _ in _LISTS:
        fields[field] = parse(long, getattr(args, field))
    return CaptureSpec(**fields)


def run(args: argparse.Namespace) -> int:
    families = [Family.IPV4] if args.no_ipv6 else [Family.IPV4, Family.IPV6]
    try:
        spec = spec_from_args(args)
    except CaptureError as exc:
        print(f"meshproxy iptables: {exc}", file=sys.stderr)
        return 2
    targets = {family: Ruleset() if args.cleanup else render(spec, family) for family in families}
    if args.dry_run:
        for family, rules in targets.items():
            print(f"# {family.command}-restore --noflush")
            print(rules.restore_text(), end="")
        return 0
    try:
        changed = converge(targets)
    except CaptureError as exc:
        print(f"meshproxy iptables: {exc}", file=sys.stderr)
        return 3
    verb = "removed" if args.cleanup else "installed"
    done = ", ".join(f.command for f in changed) or "nothing to change"
    print(f"meshproxy iptables: capture {verb} ({done})", file=sys.stderr)
    return 0
