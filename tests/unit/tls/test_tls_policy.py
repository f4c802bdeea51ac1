"""The post-quantum group policy: names, Envoy's ecdh_curves, and the verdict on a handshake."""

from __future__ import annotations

import pytest

from meshproxy.errors import ConfigError
from meshproxy.tls import MESH_DEFAULT, OFF, PREFERRED, REQUIRED, PqMode
from meshproxy.tls.policy import canonical_group, from_ecdh_curves, named


def test_the_three_policies() -> None:
    assert PREFERRED.openssl_groups == "X25519MLKEM768:X25519"
    assert REQUIRED.openssl_groups == "X25519MLKEM768"
    assert OFF.openssl_groups == "X25519:P-256"
    assert MESH_DEFAULT is REQUIRED
    assert [named(n) for n in ("preferred", "required", "off")] == [PREFERRED, REQUIRED, OFF]


def test_unknown_policy_name() -> None:
    with pytest.raises(
        ConfigError, match='pq_policy: "strict" is not a policy; use one of preferred, required, off'
    ):
        named("strict")


@pytest.mark.parametrize(
    ("curves", "mode", "groups"),
    [
        ([], PqMode.PREFERRED, ("X25519MLKEM768", "X25519")),
        (["X25519MLKEM768"], PqMode.REQUIRED, ("X25519MLKEM768",)),
        (["X25519MLKEM768", "X25519"], PqMode.PREFERRED, ("X25519MLKEM768", "X25519")),
        (["X25519", "P-256"], PqMode.OFF, ("X25519", "P-256")),
        (["P-256", "X25519MLKEM768"], PqMode.PREFERRED, ("P-256", "X25519MLKEM768")),
        (["secp384r1", "SecP256r1MLKEM768"], PqMode.PREFERRED, ("P-384", "SecP256r1MLKEM768")),
    ],
)
def test_ecdh_curves(curves: list[str], mode: PqMode, groups: tuple[str, ...]) -> None:
    policy = from_ecdh_curves(curves)
    assert (policy.mode, policy.groups) == (mode, groups)


def test_ecdh_curves_that_name_a_policy_are_that_policy() -> None:
    assert from_ecdh_curves(["X25519MLKEM768"]) is REQUIRED
    assert from_ecdh_curves(["X25519", "P-256"]) is OFF


def test_unsupported_or_repeated_curves() -> None:
    with pytest.raises(ConfigError) as bad:
        from_ecdh_curves(["X25519", "P-192", "X25519"])
    assert bad.value.problems[0].startswith('tls_params.ecdh_curves[1]: "P-192" is not a supported group')
    assert bad.value.problems[1] == "tls_params.ecdh_curves: a group is listed twice"


def test_openssl_spellings_are_envoys() -> None:
    assert [canonical_group(g) for g in ("x25519", "secp256r1", "X25519MLKEM768", "ffdhe2048")] == [
        "X25519",
        "P-256",
        "X25519MLKEM768",
        "ffdhe2048",
    ]


def test_verdict() -> None:
    assert REQUIRED.verdict("X25519MLKEM768") is None
    assert REQUIRED.verdict("x25519") == (
        "peer negotiated X25519, not a post-quantum group (policy requires X25519MLKEM768)"
    )
    assert PREFERRED.verdict("x25519") is None
    assert OFF.verdict("X25519MLKEM768") == (
        "peer negotiated X25519MLKEM768, which we did not offer (X25519:P-256)"
    )
    assert PREFERRED.verdict("") == "peer negotiated no group, which we did not offer (X25519MLKEM768:X25519)"
