"""FileCertSource: reload on an atomic symlink swap, keep old material on bad files.

The files live in a Kubernetes-style secret volume (``cert.pem -> ..data/cert.pem``, ``..data ->
..<version>``; a new version is published by renaming a fresh link over ``..data``). Time is
only the ``now`` passed to ``poll``: nothing sleeps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from pathlib import Path

import pytest
from certs import IssuedLeaf, make_ca, make_leaf

from meshproxy.errors import IdentityError
from meshproxy.identity.certs import Algorithm
from meshproxy.identity.source import CertMaterial, CertSources, FileCertSource, Paths, Pem, Rotate

NAMES = ("cert.pem", "key.pem", "ca.pem")


class SecretVolume:
    """What the kubelet's atomic writer (and cert-manager's CSI driver, SPIRE's helper) do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    @property
    def paths(self) -> tuple[str, str, str]:
        return (str(self.root / NAMES[0]), str(self.root / NAMES[1]), str(self.root / NAMES[2]))

    def publish(self, files: dict[str, bytes]) -> None:
        self.version += 1
        directory = self.root / f"..v{self.version}"
        directory.mkdir()
        for name, data in files.items():
            (directory / name).write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(directory.name)
        os.replace(tmp, self.root / "..data")  # rename(2) over the old link: atomic
        for name in NAMES:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def publish_leaf(self, leaf: IssuedLeaf) -> None:
        self.publish(files_of(leaf))


def files_of(leaf: IssuedLeaf) -> dict[str, bytes]:
    return {"cert.pem": leaf.cert_pem, "key.pem": leaf.key_pem, "ca.pem": leaf.ca.cert_pem}


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    return SecretVolume(tmp_path)


def test_initial_load(volume: SecretVolume) -> None:
    leaf = make_leaf()
    volume.publish_leaf(leaf)
    source = FileCertSource(*volume.paths)
    material = source.current
    assert material.chain == (leaf.cert,)
    assert material.bundle == (leaf.ca.cert,)
    assert material.spiffe_id == leaf.spiffe_id
    assert material.not_after == leaf.cert.not_valid_after_utc
    assert (material.chain_pem, material.key_pem, material.bundle_pem) == (
        leaf.cert_pem,
        leaf.key_pem,
        leaf.ca.cert_pem,
    )
    assert source.last_error is None


@pytest.mark.parametrize("new_alg", list(Algorithm))
def test_reloads_on_symlink_swap_at_the_interval(volume: SecretVolume, new_alg: Algorithm) -> None:
    first = make_leaf()
    volume.publish_leaf(first)
    source = FileCertSource(*volume.paths, interval=5.0)
    seen: list[CertMaterial] = []
    source.subscribe(seen.append)
    assert source.poll(100.0) is False  # nothing changed

    second = make_leaf(make_ca(new_alg), spiffe_id="spiffe://cluster.local/ns/default/sa/rotated")
    volume.publish_leaf(second)
    assert source.poll(104.9) is False  # not looked at before the interval is up
    assert source.current.chain == (first.cert,)
    assert seen == []

    assert source.poll(105.0) is True
    assert source.current.chain == (second.cert,)
    assert str(source.current.spiffe_id) == "spiffe://cluster.local/ns/default/sa/rotated"
    assert seen == [source.current]
    assert source.poll(110.0) is False  # the same files again: no second notification
    assert len(seen) == 1


BAD = {
    "key of another certificate": (
        lambda good: {**files_of(good), "key.pem": make_leaf().key_pem},
        "the private key is not this certificate's key",
    ),
    "bundle of another CA": (
        lambda good: {**files_of(good), "ca.pem": make_ca(tag="other").cert_pem},
        "not signed by any of the 1 trust bundle certificates",
    ),
    "chain out of order": (
        lambda good: {**files_of(good), "cert.pem": good.cert_pem + make_ca(tag="other").cert_pem},
        "is not signed by the next certificate",
    ),
    "truncated certificate": (
        lambda good: {**files_of(good), "cert.pem": good.cert_pem[:100]},
        "cert.pem: not PEM certificates",
    ),
    "garbage key": (
        lambda good: {
            **files_of(good),
            "key.pem": b"-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n",
        },
        "key.pem: not an unencrypted PEM private key",
    ),
    "not an SVID": (
        lambda good: files_of(make_leaf(uri_sans=["spiffe://cluster.local/a", "spiffe://cluster.local/b"])),
        "exactly one",
    ),
    "key file missing": (
        lambda good: {"cert.pem": good.cert_pem, "ca.pem": good.ca.cert_pem},
        "No such file",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_keep_the_old_material(
    volume: SecretVolume, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_bad, reason = BAD[case]
    good = make_leaf()
    volume.publish_leaf(good)
    source = FileCertSource(*volume.paths, interval=1.0)
    seen: list[CertMaterial] = []
    source.subscribe(seen.append)
    before = source.current

    volume.publish(make_bad(make_leaf()))
    with caplog.at_level(logging.WARNING, logger="meshproxy.identity"):
        assert source.poll(1.0) is False
        assert source.poll(2.0) is False  # the same bad version is not reported twice
    assert source.current is before
    assert seen == []
    assert source.last_error is not None and reason in source.last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert reason in message and volume.paths[0] in message and str(before.spiffe_id) in message

    fixed = make_leaf()
    volume.publish_leaf(fixed)
    assert source.poll(3.0) is True
    assert source.current.chain == (fixed.cert,)
    assert source.last_error is None
    assert seen == [source.current]


def test_invalid_files_at_start_are_an_error(volume: SecretVolume) -> None:
    good = make_leaf()
    volume.publish({**files_of(good), "key.pem": make_leaf().key_pem})
    with pytest.raises(IdentityError, match="not this certificate's key"):
        FileCertSource(*volume.paths)


def test_errors_name_the_file(volume: SecretVolume) -> None:
    volume.publish({**files_of(make_leaf()), "ca.pem": b"not a bundle"})
    with pytest.raises(IdentityError, match=f"trust bundle {volume.paths[2]}: no certificates"):
        FileCertSource(*volume.paths)


def test_missing_files_at_start_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileCertSource(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(tmp_path / "ca.pem"))


def test_subscribers(volume: SecretVolume, caplog: pytest.LogCaptureFixture) -> None:
    volume.publish_leaf(make_leaf())
    source = FileCertSource(*volume.paths, interval=1.0)
    calls: list[str] = []

    def broken(material: CertMaterial) -> None:
        calls.append("broken")
        raise RuntimeError("subscriber bug")

    source.subscribe(broken)
    unsubscribe = source.subscribe(lambda m: calls.append("second"))

    volume.publish_leaf(make_leaf())
    with caplog.at_level(logging.ERROR, logger="meshproxy.identity"):
        assert source.poll(0.0) is True
    assert calls == ["broken", "second"]  # one failing subscriber does not starve the others
    assert "subscriber" in caplog.text

    unsubscribe()
    volume.publish_leaf(make_leaf())
    assert source.poll(1.0) is True
    assert calls == ["broken", "second", "broken"]


# ----------------------------------------------------------------------------- CertSources


class Follower:
    """An owner of a TLS context: what it serves, and the material each rotation brought."""

    def __init__(self, leaf: IssuedLeaf) -> None:
        self.serving = (leaf.cert_pem, leaf.key_pem, leaf.ca.cert_pem)
        self.rotations: list[CertMaterial] = []

    def rotate(self, material: CertMaterial) -> None:
        self.rotations.append(material)
        self.serving = material.pem


def test_followers_of_the_same_files_share_one_source_until_the_last_leaves(volume: SecretVolume) -> None:
    first, second = make_leaf(), make_leaf()
    volume.publish_leaf(first)
    sources = CertSources()
    a, b = Follower(first), Follower(first)
    sources.follow_only({"a": (volume.paths, a.serving, a.rotate), "b": (volume.paths, b.serving, b.rotate)})
    assert len(sources) == 2 and list(sources.sources) == [volume.paths]
    assert a.rotations == b.rotations == []  # they serve what the files hold: nothing to do
    volume.publish_leaf(second)
    sources.poll(0.0)
    assert a.serving[0] == b.serving[0] == second.cert_pem
    sources.follow_only({"b": (volume.paths, b.serving, b.rotate)})  # a's listener went away
    volume.publish_leaf(first)
    sources.poll(1.0)
    assert [m.chain_pem for m in a.rotations] == [second.cert_pem]  # a no longer follows
    assert [m.chain_pem for m in b.rotations] == [second.cert_pem, first.cert_pem]
    assert list(sources.sources) == [volume.paths]
    sources.follow_only({})
    assert len(sources) == 0 and sources.sources == {}  # nobody follows: nothing is polled


def test_a_new_follower_built_from_older_material_rotates_at_once(volume: SecretVolume) -> None:
    """An xDS update compiled before the files changed must not serve the older set."""
    first, second = make_leaf(), make_leaf()
    volume.publish_leaf(first)
    sources = CertSources()
    old = Follower(first)
    sources.follow_only({"old": (volume.paths, old.serving, old.rotate)})
    volume.publish_leaf(second)  # not polled yet: the shared source still holds ``first``
    stale = Follower(first)
    sources.follow_only(
        {"old": (volume.paths, old.serving, old.rotate), "new": (volume.paths, stale.serving, stale.rotate)}
    )
    assert [m.chain_pem for m in stale.rotations] == [second.cert_pem]
    assert [m.chain_pem for m in old.rotations] == [second.cert_pem]  # the check reached it too
    sources.poll(0.0)
    assert len(stale.rotations) == len(old.rotations) == 1  # nothing changed since


def test_files_that_do_not_load_are_not_followed_until_they_do(
    volume: SecretVolume, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = make_leaf()
    other_ca = make_leaf(make_ca(tag="other"))
    volume.publish({**files_of(leaf), "ca.pem": other_ca.ca.cert_pem})  # a bundle from another CA
    sources = CertSources()
    owner = Follower(leaf)
    wanted: dict[Hashable, tuple[Paths, Pem, Rotate]] = {"owner": (volume.paths, owner.serving, owner.rotate)}
    with caplog.at_level(logging.ERROR, logger="meshproxy.identity"):
        sources.follow_only(wanted)
    assert len(sources) == 0 and sources.sources == {}
    assert "not followed for rotation" in caplog.text and volume.paths[2] in caplog.text
    volume.publish_leaf(leaf)
    sources.follow_only(wanted)  # the next configuration change tries again
    assert len(sources) == 1 and owner.rotations == []
