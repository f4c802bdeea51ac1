"""The capture rules as data: rendering, reading a listing back, and the transaction between.

Pure: no namespace, no kernel (tests/e2e/test_iptables_netns.py checks the same rules there).
"""

from __future__ import annotations

import argparse

import pytest

from meshproxy.sidecar.command import add_parser, spec_from_args
from meshproxy.sidecar.errors import CaptureError
from meshproxy.sidecar.iptables import (
    OUR_CHAINS,
    CaptureSpec,
    Family,
    Ruleset,
    parse_cidrs,
    parse_ports,
    render,
    transaction,
)
from meshproxy.sidecar.iptables import ours as ours_in

TAG = "-m comment --comment meshproxy"
IN = "MESHPROXY_IN_REDIRECT"


def spec(*argv: str) -> CaptureSpec:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return spec_from_args(parser.parse_args(["iptables", *argv]))


def output_rules(rules: Ruleset) -> list[str]:
    return [r for r in rules.rules if r.startswith("-A MESHPROXY_OUTPUT ")]


def test_defaults_are_istios_sidecar_rules() -> None:
    rules = render(CaptureSpec(), Family.IPV4)
    assert rules.chains == OUR_CHAINS
    assert rules.rules[:2] == (
        f"-A PREROUTING -p tcp {TAG} -j MESHPROXY_INBOUND",
        f"-A OUTPUT -p tcp {TAG} -j MESHPROXY_OUTPUT",
    )
    assert f"-A MESHPROXY_REDIRECT -p tcp {TAG} -j REDIRECT --to-ports 15001" in rules.rules
    assert f"-A MESHPROXY_IN_REDIRECT -p tcp {TAG} -j REDIRECT --to-ports 15006" in rules.rules
    assert output_rules(rules) == [
        f"-A MESHPROXY_OUTPUT -s 127.0.0.6/32 -o lo {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 {TAG} -j {IN}",
        f"-A MESHPROXY_OUTPUT -o lo -m owner ! --uid-owner 1337 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT -m owner --uid-owner 1337 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner 1337 {TAG} -j {IN}",
        f"-A MESHPROXY_OUTPUT -o lo -m owner ! --gid-owner 1337 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT -m owner --gid-owner 1337 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT -d 127.0.0.1/32 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT {TAG} -j MESHPROXY_REDIRECT",
    ]


def test_every_rule_is_tagged_and_ipv6_uses_its_own_loopback() -> None:
    rules = render(spec("-u", "1337,1338"), Family.IPV6)
    assert all(TAG in rule for rule in rules.rules)
    text = "\n".join(rules.rules)
    assert "::1/128" in text and "::6/128" in text and "127.0.0" not in text
    assert text.count("--uid-owner 1338") == 3


def test_cidrs_go_to_their_own_family() -> None:
    s = spec("-x", "10.9.0.0/16,fd00:9::/32", "-i", "10.0.0.0/8")
    v4, v6 = (output_rules(render(s, f)) for f in Family)
    assert f"-A MESHPROXY_OUTPUT -d 10.9.0.0/16 {TAG} -j RETURN" in v4
    assert not any("fd00" in r for r in v4)
    assert f"-A MESHPROXY_OUTPUT -d fd00:9::/32 {TAG} -j RETURN" in v6
    # Only 10.0.0.0/8 is captured; IPv6 has no included network, so nothing is redirected there.
    assert v4[-1] == f"-A MESHPROXY_OUTPUT -d 10.0.0.0/8 {TAG} -j MESHPROXY_REDIRECT"
    assert not any(r.endswith("-j MESHPROXY_REDIRECT") for r in v6)


def test_port_exclusions_come_before_the_owner_rules_and_inclusions_after() -> None:
    rules = output_rules(render(spec("-o", "22,9090", "-q", "53", "-i", ""), Family.IPV4))
    assert rules[:2] == [
        f"-A MESHPROXY_OUTPUT -p tcp -m tcp --dport 22 {TAG} -j RETURN",
        f"-A MESHPROXY_OUTPUT -p tcp -m tcp --dport 9090 {TAG} -j RETURN",
    ]
    assert rules[-1] == f"-A MESHPROXY_OUTPUT -p tcp -m tcp --dport 53 {TAG} -j MESHPROXY_REDIRECT"


def test_inbound_selection_by_port_and_source() -> None:
    everything = [r for r in render(CaptureSpec(), Family.IPV4).rules if r.startswith("-A MESHPROXY_INBOUND")]
    assert everything == [
        f"-A MESHPROXY_INBOUND -p tcp -m tcp --dport 15021 {TAG} -j RETURN",
        f"-A MESHPROXY_INBOUND -p tcp -m tcp --dport 15090 {TAG} -j RETURN",
        f"-A MESHPROXY_INBOUND -p tcp {TAG} -j MESHPROXY_IN_REDIRECT",
    ]
    s = spec(
        "-b", "8080,8443", "--include-inbound-cidrs", "10.1.0.0/16", "--exclude-inbound-cidrs", "10.1.9.0/24"
    )
    chosen = [r for r in render(s, Family.IPV4).rules if r.startswith("-A MESHPROXY_INBOUND")]
    assert chosen == [
        f"-A MESHPROXY_INBOUND -s 10.1.9.0/24 {TAG} -j RETURN",
        f"-A MESHPROXY_INBOUND -s 10.1.0.0/16 -p tcp -m tcp --dport 8080 {TAG} -j MESHPROXY_IN_REDIRECT",
        f"-A MESHPROXY_INBOUND -s 10.1.0.0/16 -p tcp -m tcp --dport 8443 {TAG} -j MESHPROXY_IN_REDIRECT",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x", "10.9.0.1/16"], "--exclude-outbound-cidrs: '10.9.0.1/16' is not a CIDR"),
        (["-i", "hello"], "--include-outbound-cidrs: 'hello' is not a CIDR"),
        (["-o", "70000"], "--exclude-outbound-ports: '70000' is not a TCP port"),
        (["-b", "http"], "--include-inbound-ports: 'http' is not a TCP port"),
        (["-u", "root"], "--proxy-uid: 'root' is not a numeric id"),
        (["-p", "0"], "--outbound-port: 0 is not a TCP port"),
    ],
)
def test_bad_flags_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(CaptureError, match="^" + message):
        spec(*argv)


def test_star_and_empty_lists() -> None:
    assert parse_cidrs("-i", "*").everything and parse_ports("-b", " * ").everything
    assert parse_cidrs("-x", "").networks == () and parse_ports("-o", ",").ports == ()
    assert parse_cidrs("-x", "10.0.0.1").of(Family.IPV4) == ["10.0.0.1/32"]


SAVED = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
-A INPUT -m comment --comment meshproxy -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [3:180]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:MESHPROXY_OUTPUT - [0:0]
-A PREROUTING -p tcp -m comment --comment meshproxy-other -j FOREIGN
-A OUTPUT -d 192.0.2.1/32 -j RETURN
-A OUTPUT -p tcp -m comment --comment meshproxy -j MESHPROXY_OUTPUT
-A MESHPROXY_OUTPUT -j RETURN
COMMIT
"""


def test_reading_a_listing_back_takes_only_our_nat_chains_and_tagged_rules() -> None:
    assert ours_in(SAVED) == Ruleset(
        chains=("MESHPROXY_OUTPUT",),
        rules=(f"-A OUTPUT -p tcp {TAG} -j MESHPROXY_OUTPUT", "-A MESHPROXY_OUTPUT -j RETURN"),
    )


def test_render_reads_back_as_itself() -> None:
    rules = render(spec("-o", "9090", "-x", "fd00::/8"), Family.IPV6)
    assert ours_in(rules.restore_text()) == rules


def test_transaction_is_none_when_nothing_changes() -> None:
    rules = render(CaptureSpec(), Family.IPV4)
    assert transaction(rules, rules) is None
    assert transaction(Ruleset(), Ruleset()) is None


def test_cleanup_transaction_flushes_deletes_and_removes_ours_only() -> None:
    text = transaction(ours_in(SAVED), Ruleset())
    assert text == (
        "*nat\n:MESHPROXY_OUTPUT - [0:0]\n"
        f"-D OUTPUT -p tcp {TAG} -j MESHPROXY_OUTPUT\n"
        "-X MESHPROXY_OUTPUT\nCOMMIT\n"
    )


def test_replacing_rules_declares_every_chain_and_drops_the_old_jumps() -> None:
    old = render(spec("-o", "9090"), Family.IPV4)
    new = render(spec("-o", "9091"), Family.IPV4)
    text = transaction(old, new)
    assert text is not None
    lines = text.splitlines()
    assert lines[1:5] == [f":{c} - [0:0]" for c in OUR_CHAINS]
    assert lines[5:7] == [
        f"-D PREROUTING -p tcp {TAG} -j MESHPROXY_INBOUND",
        f"-D OUTPUT -p tcp {TAG} -j MESHPROXY_OUTPUT",
    ]
    assert not any(line.startswith("-X") for line in lines)
    assert lines[7:-1] == list(new.rules)
