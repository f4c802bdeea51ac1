"""``meshproxy iptables`` against the kernel, in a fresh pod: what is installed, what is removed.

Each test compares ``iptables-save`` / ``ip6tables-save`` listings taken in the pod; nothing
here reads meshproxy's own model of the rules except through the command's printed output.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from controlplane.demo.pods import Pod, Pods

FAMILIES = {"ipv4": "iptables", "ipv6": "ip6tables"}


def saved(pod: Pod, *args: str) -> dict[str, str]:
    """Both families' listings; policy counters are zeroed (traffic moves them, rules do not)."""
    return {
        family: re.sub(r"\[\d+:\d+\]", "[0:0]", pod.save(f"{command}-save", *args))
        for family, command in FAMILIES.items()
    }


def ours(listing: str) -> list[str]:
    return [line for line in listing.splitlines() if "MESHPROXY" in line or "meshproxy" in line]


def dry_run_sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("# "):
            current = sections.setdefault(line.split()[1].removesuffix("-restore"), [])
        else:
            current.append(line)
    return {family: ours("\n".join(sections[command])) for family, command in FAMILIES.items()}


def add_foreign_rules(pod: Pod) -> None:
    """Rules someone else owns, in the nat and filter tables of both families."""
    for command, address in (("iptables", "192.0.2.1"), ("ip6tables", "2001:db8::1")):
        pod.run(command, "-t", "nat", "-N", "FOREIGN")
        pod.run(command, "-t", "nat", "-A", "FOREIGN", "-d", address, "-j", "RETURN")
        pod.run(command, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "FOREIGN")
        pod.run(command, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "7", "-j", "RETURN")
        pod.run(command, "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")


@pytest.fixture
def pod(pods: Pods) -> Pod:
    return pods.add("a")


def test_dry_run_prints_exactly_what_is_installed(pod: Pod) -> None:
    flags = [
        "-o",
        "9090",
        "-x",
        "10.9.0.0/16,fd00:9::/32",
        "-b",
        "8080,8443",
        "--exclude-inbound-cidrs",
        "10.7.0.0/16",
    ]
    dry = pod.meshproxy("iptables", "--dry-run", *flags)
    assert dry.returncode == 0, dry.stderr
    assert all(not ours(listing) for listing in saved(pod, "-t", "nat").values()), "dry run installed rules"
    done = pod.meshproxy("iptables", *flags)
    assert done.returncode == 0, done.stderr
    printed = dry_run_sections(dry.stdout)
    listings = saved(pod)
    for family in FAMILIES:
        assert printed[family] == ours(listings[family])
        assert len(printed[family]) > 10
    assert "-A MESHPROXY_OUTPUT -d 10.9.0.0/16 -m comment --comment meshproxy -j RETURN" in printed["ipv4"]
    assert "-A MESHPROXY_OUTPUT -d fd00:9::/32 -m comment --comment meshproxy -j RETURN" in printed["ipv6"]


def test_installing_twice_is_installing_once(pod: Pod) -> None:
    first = pod.meshproxy("iptables", "-o", "9090")
    after_first = saved(pod)
    second = pod.meshproxy("iptables", "-o", "9090")
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert saved(pod) == after_first
    assert "nothing to change" in second.stderr
    # A changed flag replaces the rules instead of adding a second set.
    assert pod.meshproxy("iptables", "-o", "9091").returncode == 0
    rules = ours(saved(pod)["ipv4"])
    assert sum("--dport 9091" in r for r in rules) == 1
    assert not any("--dport 9090" in r for r in rules)
    assert sum(r.startswith("-A OUTPUT ") for r in rules) == 1


def test_cleanup_restores_the_listing_exactly_and_keeps_foreign_rules(pod: Pod) -> None:
    add_foreign_rules(pod)
    before = saved(pod)
    assert pod.meshproxy("iptables", "-x", "192.0.2.0/24").returncode == 0
    installed = saved(pod)
    for family in FAMILIES:
        assert ours(installed[family])
        # Every foreign line is still there, in the same order.
        foreign = [line for line in installed[family].splitlines() if line not in ours(installed[family])]
        assert foreign == before[family].splitlines()
    cleanup = pod.meshproxy("iptables", "--cleanup")
    assert cleanup.returncode == 0, cleanup.stderr
    assert saved(pod) == before
    again = pod.meshproxy("iptables", "--cleanup")
    assert again.returncode == 0 and "nothing to change" in again.stderr


def test_cleanup_in_a_fresh_pod_leaves_the_nat_table_as_it_was(pod: Pod) -> None:
    # A fresh namespace has no nat table until something uses it; ``-t nat`` lists it either
    # way (empty builtin chains), so this is the listing to compare (see docs/sidecar.md).
    before = saved(pod, "-t", "nat")
    assert pod.meshproxy("iptables").returncode == 0
    assert pod.meshproxy("iptables", "--cleanup").returncode == 0
    assert saved(pod, "-t", "nat") == before


def test_a_refused_ipv6_cleanup_puts_the_ipv4_rules_back(pod: Pod) -> None:
    assert pod.meshproxy("iptables").returncode == 0
    # Someone else's untagged rule jumps into our IPv6 chain: the kernel refuses to delete it.
    pod.run(
        "ip6tables", "-t", "nat", "-A", "OUTPUT", "-d", "2001:db8::2", "-p", "tcp", "-j", "MESHPROXY_REDIRECT"
    )
    before = saved(pod)
    cleanup = pod.meshproxy("iptables", "--cleanup")
    assert cleanup.returncode == 3
    assert "ip6tables-restore" in cleanup.stderr and "iptables rules rolled back" in cleanup.stderr
    assert saved(pod) == before


def test_a_failing_ipv6_install_puts_the_previous_ipv4_rules_back(pod: Pod, tmp_path: Path) -> None:
    assert pod.meshproxy("iptables", "-o", "9090").returncode == 0
    before = saved(pod)
    # An ip6tables-restore that refuses everything, found first on PATH: the IPv4 transaction
    # succeeds with the real iptables-restore, the IPv6 one fails.
    broken = tmp_path / "ip6tables-restore"
    broken.write_text("#!/bin/sh\necho 'forced failure' >&2\nexit 2\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    failed = pod.meshproxy(
        "iptables", "-o", "7070", env={"PATH": f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin"}
    )
    assert failed.returncode == 3
    assert "forced failure" in failed.stderr and "iptables rules rolled back" in failed.stderr
    assert saved(pod) == before
