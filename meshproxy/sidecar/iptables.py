"""The capture rules as data: a ``CaptureSpec`` in, the exact ``nat`` table lines out.

Owns what ``meshproxy iptables`` installs, and how to go from the rules a namespace has now to
the rules it should have in one ``iptables-restore --noflush`` transaction per address family.
Pure: no processes, no sockets; the shell in ``netfilter.py`` runs the commands. Must not
depend on the proxy's runtime.

The rules are Istio's (``tools/istio-iptables``), with its chains renamed and every rule tagged:

- ``PREROUTING -p tcp → MESHPROXY_INBOUND``: inbound excluded ports and source CIDRs return,
  the rest (by included port and source CIDR) goes to ``MESHPROXY_IN_REDIRECT`` (→ 15006).
- ``OUTPUT -p tcp → MESHPROXY_OUTPUT``, in this order:
  1. excluded outbound ports return (Istio's ``-o``);
  2. ``-s 127.0.0.6 -o lo`` returns: the source the inbound listener uses to reach the
     application over the pod's own address without being captured again;
  3. per proxy uid, then gid: the proxy's traffic to the pod's own non-loopback address over
     ``lo`` is inbound traffic of this pod (→ 15006); anyone else's traffic over ``lo`` returns;
     the proxy's other traffic returns (it is never captured twice);
  4. ``-d 127.0.0.1`` returns (loopback stays local);
  5. excluded destination CIDRs return (``-x``); included ports (``-q``) and included
     destination CIDRs (``-i``, ``*`` for all) go to ``MESHPROXY_REDIRECT`` (→ 15001).

Istio's rules for port 15008 (HBONE), DNS capture and TPROXY are not carried: meshproxy has
neither. Rules are written exactly as ``iptables-save`` prints them (field order, ``/32``
suffixes, ``-m tcp``), so ``--dry-run`` output can be compared line for line with what is
installed. Every rule carries ``-m comment --comment meshproxy`` and every chain is named
``MESHPROXY_*``: cleanup removes exactly these and nothing of anyone else's.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshproxy.sidecar.errors import CaptureError

TAG = "meshproxy"
CHAIN_PREFIX = "MESHPROXY_"
INBOUND = "MESHPROXY_INBOUND"
IN_REDIRECT = "MESHPROXY_IN_REDIRECT"
OUTPUT = "MESHPROXY_OUTPUT"
REDIRECT = "MESHPROXY_REDIRECT"
# iptables-save lists user chains in creation order; creating them in this order keeps the
# listing identical to ``render``'s. Builtin chains come first, in the kernel's order.
OUR_CHAINS = (INBOUND, IN_REDIRECT, OUTPUT, REDIRECT)
BUILTIN_CHAINS = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
ALL = "*"

_COMMENT = re.compile(r"(?:^| )-m comment --comment " + TAG + r"(?: |$)")


class Family(enum.Enum):
    """An address family and the commands that manage its rules."""

    IPV4 = (4, "iptables", "127.0.0.1/32", "127.0.0.6/32")
    IPV6 = (6, "ip6tables", "::1/128", "::6/128")

    def __init__(self, version: int, command: str, loopback: str, passthrough_source: str) -> None:
        self.version = version
        self.command = command
        self.loopback = loopback
        # The source address the inbound listener binds to reach the application (Istio's).
        self.passthrough_source = passthrough_source


@dataclass(frozen=True, slots=True)
class Cidrs:
    """A list of networks, or every address (``*``)."""

    everything: bool
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def of(self, family: Family) -> list[str]:
        return [str(n) for n in self.networks if n.version == family.version]

    def text(self) -> str:
        """As the command line writes it."""
        return ALL if self.everything else ",".join(map(str, self.networks))


@dataclass(frozen=True, slots=True)
class Ports:
    """A list of TCP ports, or every port (``*``)."""

    everything: bool
    ports: tuple[int, ...] = ()

    def text(self) -> str:
        """As the command line writes it."""
        return ALL if self.everything else ",".join(map(str, self.ports))


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """What to capture; the defaults are Istio's sidecar injection defaults for meshproxy."""

    outbound_port: int = 15001
    inbound_port: int = 15006
    proxy_uids: tuple[int, ...] = (1337,)
    proxy_gids: tuple[int, ...] = (1337,)
    include_outbound_cidrs: Cidrs = Cidrs(everything=True)
    exclude_outbound_cidrs: Cidrs = Cidrs(everything=False)
    include_outbound_ports: Ports = Ports(everything=False)
    exclude_outbound_ports: Ports = Ports(everything=False)
    include_inbound_cidrs: Cidrs = Cidrs(everything=True)
    exclude_inbound_cidrs: Cidrs = Cidrs(everything=False)
    include_inbound_ports: Ports = Ports(everything=True)
    # The proxy's own health (15021) and Prometheus (15090) ports stay reachable directly.
    exclude_inbound_ports: Ports = Ports(everything=False, ports=(15021, 15090))


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Our part of one family's ``nat`` table: chain names and ``-A`` lines, in save order."""

    chains: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def restore_text(self) -> str:
        """The ruleset as ``iptables-restore`` input (and as ``iptables-save`` shows it)."""
        return "\n".join(["*nat", *(f":{c} - [0:0]" for c in self.chains), *self.rules, "COMMIT", ""])


def parse_cidrs(flag: str, value: str) -> Cidrs:
    """``*``, or comma-separated networks (a bare address is a /32 or /128); '' is none."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == [ALL]:
        return Cidrs(everything=True)
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise CaptureError(
                f"{flag}: {item!r} is not a CIDR ({exc}); use e.g. 10.0.0.0/8 or '*'"
            ) from None
    return Cidrs(everything=False, networks=tuple(networks))


def parse_ports(flag: str, value: str) -> Ports:
    """``*``, or comma-separated TCP ports 1-65535; '' is none."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == [ALL]:
        return Ports(everything=True)
    return Ports(everything=False, ports=tuple(_number(flag, item, 1, 65535, "a TCP port") for item in items))


def parse_ids(flag: str, value: str) -> tuple[int, ...]:
    """Comma-separated numeric uids or gids."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(_number(flag, item, 0, 2**32 - 2, "a numeric id") for item in items)


def _number(flag: str, item: str, low: int, high: int, what: str) -> int:
    if not item.isdigit() or not low <= int(item) <= high:
        raise CaptureError(f"{flag}: {item!r} is not {what} ({low}-{high})")
    return int(item)


def _rule(chain: str, *, target: str, matches: Sequence[str] = ()) -> str:
    # ``matches`` come in iptables-save's order: addresses, interfaces, protocol, modules.
    return " ".join(["-A", chain, *matches, "-m comment --comment", TAG, "-j", target])


def _dport(port: int, negate: bool = False) -> list[str]:
    return ["-p tcp -m tcp", ("! " if negate else "") + f"--dport {port}"]


def _owner_rules(kind: str, ids: Iterable[int], family: Family) -> list[str]:
    rules = []
    for owner in ids:
        rules += [
            _rule(
                OUTPUT,
                target=IN_REDIRECT,
                matches=[f"! -d {family.loopback} -o lo -p tcp", f"-m owner --{kind}-owner {owner}"],
            ),
            _rule(OUTPUT, target="RETURN", matches=["-o lo", f"-m owner ! --{kind}-owner {owner}"]),
            _rule(OUTPUT, target="RETURN", matches=[f"-m owner --{kind}-owner {owner}"]),
        ]
    return rules


def _selected(cidrs: Cidrs, family: Family, flag: str) -> list[str | None]:
    """The address matches a rule set repeats over: None means any address."""
    return [None] if cidrs.everything else [f"{flag} {c}" for c in cidrs.of(family)]


def render(spec: CaptureSpec, family: Family) -> Ruleset:
    """The rules ``spec`` installs for ``family``, exactly as ``iptables-save`` lists them."""
    inbound = [
        _rule(INBOUND, target="RETURN", matches=[f"-s {c}"]) for c in spec.exclude_inbound_cidrs.of(family)
    ]
    if spec.include_inbound_ports.everything:
        inbound += [
            _rule(INBOUND, target="RETURN", matches=_dport(p)) for p in spec.exclude_inbound_ports.ports
        ]
        port_matches: list[list[str]] = [[]]
    else:
        port_matches = [_dport(p) for p in spec.include_inbound_ports.ports]
    for source in _selected(spec.include_inbound_cidrs, family, "-s"):
        for ports in port_matches:
            matches = [source] if source else []
            inbound.append(_rule(INBOUND, target=IN_REDIRECT, matches=matches + (ports or ["-p tcp"])))

    output = [_rule(OUTPUT, target="RETURN", matches=_dport(p)) for p in spec.exclude_outbound_ports.ports]
    output.append(_rule(OUTPUT, target="RETURN", matches=[f"-s {family.passthrough_source} -o lo"]))
    output += _owner_rules("uid", spec.proxy_uids, family)
    output += _owner_rules("gid", spec.proxy_gids, family)
    output.append(_rule(OUTPUT, target="RETURN", matches=[f"-d {family.loopback}"]))
    output += [
        _rule(OUTPUT, target="RETURN", matches=[f"-d {c}"]) for c in spec.exclude_outbound_cidrs.of(family)
    ]
    output += [_rule(OUTPUT, target=REDIRECT, matches=_dport(p)) for p in spec.include_outbound_ports.ports]
    output += [
        _rule(OUTPUT, target=REDIRECT, matches=[d] if d else [])
        for d in _selected(spec.include_outbound_cidrs, family, "-d")
    ]

    rules = [
        _rule("PREROUTING", target=INBOUND, matches=["-p tcp"]),
        _rule("OUTPUT", target=OUTPUT, matches=["-p tcp"]),
        *inbound,
        _rule(IN_REDIRECT, target=f"REDIRECT --to-ports {spec.inbound_port}", matches=["-p tcp"]),
        *output,
        _rule(REDIRECT, target=f"REDIRECT --to-ports {spec.outbound_port}", matches=["-p tcp"]),
    ]
    return Ruleset(chains=OUR_CHAINS, rules=tuple(rules))


def ours(saved: str) -> Ruleset:
    """Our chains and rules in the ``nat`` table of an ``iptables-save`` listing.

    A rule is ours when it sits in a ``MESHPROXY_*`` chain or carries our comment tag; a
    chain is ours by its name. Everything else is someone else's and is never touched.
    """
    chains: list[str] = []
    rules: list[str] = []
    table = None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif table != "nat":
            continue
        elif line.startswith(":" + CHAIN_PREFIX):
            chains.append(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            chain = line.split(" ", 2)[1]
            if chain.startswith(CHAIN_PREFIX) or _COMMENT.search(line):
                rules.append(line)
    return Ruleset(chains=tuple(chains), rules=tuple(rules))


def transaction(current: Ruleset, desired: Ruleset) -> str | None:
    """The ``iptables-restore --noflush`` input that turns ``current`` into ``desired``.

    None when they are equal (installing twice is installing once). Declaring a chain flushes
    it when it exists (in --noflush mode), so our chains are emptied and refilled; our rules in
    builtin chains are deleted one by one; chains no longer wanted are removed. Being one
    restore input, the kernel applies all of it or none of it.
    """
    if current == desired:
        return None
    chains = [*current.chains, *(c for c in desired.chains if c not in current.chains)]
    lines = ["*nat", *(f":{c} - [0:0]" for c in chains)]
    lines += ["-D" + rule[2:] for rule in current.rules if not rule.split(" ", 2)[1].startswith(CHAIN_PREFIX)]
    lines += [f"-X {c}" for c in current.chains if c not in desired.chains]
    lines += [*desired.rules, "COMMIT", ""]
    return "\n".join(lines)
