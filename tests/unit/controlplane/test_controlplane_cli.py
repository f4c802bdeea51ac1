"""``controlplane`` commands that return: ``token create``, and ``serve``'s refusals to start."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.cli import main
from controlplane.tokens import TokenTable


def test_token_create_prints_a_token_and_appends_its_grant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    for identity in ("spiffe://mesh.local/ns/default/sa/web", "spiffe://mesh.local/ns/default/sa/"):
        assert main(["token", "create", "--tokens", str(tokens), "--identity", identity]) == 0
    printed = capsys.readouterr().out.split()
    table = TokenTable.parse(tokens.read_text(), source="tokens", trust_domain="mesh.local")
    assert [str(table.lookup(t)) for t in printed] == [
        "spiffe://mesh.local/ns/default/sa/web",
        "spiffe://mesh.local/ns/default/sa/",
    ]


def test_token_create_refuses_an_identity_that_is_not_spiffe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create", "--tokens", str(tmp_path / "t"), "--identity", "web"]) == 2
    assert "--identity: SPIFFE ID 'web': must start with 'spiffe://'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_serve_with_an_invalid_tokens_file_exits_1_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("short spiffe://mesh.local/ns/a/sa/b\n")
    argv = [
        "serve",
        "--ca-dir",
        str(tmp_path / "ca"),
        "--tokens",
        str(tokens),
        "--state-dir",
        str(tmp_path / "state"),
        "--xds-address",
        "127.0.0.1:0",
    ]
    assert main(argv) == 1
    assert f"{tokens}:1: token is 5 characters" in capsys.readouterr().err
    assert not (tmp_path / "ca").exists()  # checked before the CA is created
    assert not (tmp_path / "state").exists()


def test_token_create_without_tokens_appends_to_the_state_directorys_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = "spiffe://mesh.local/ns/default/sa/web"
    assert main(["token", "create", "--state-dir", str(tmp_path), "--identity", identity]) == 0
    token = capsys.readouterr().out.strip()
    table = TokenTable.parse((tmp_path / "tokens").read_text(), source="tokens", trust_domain="mesh.local")
    assert str(table.lookup(token)) == identity


@pytest.mark.parametrize("ttl", ["5", "0", "-30", "90000"])
def test_serve_refuses_an_svid_lifetime_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    argv = [
        "serve",
        "--ca-dir",
        str(tmp_path / "ca"),
        "--tokens",
        str(tmp_path / "tokens"),
        "--svid-ttl",
        ttl,
    ]
    assert main(argv) == 2
    assert f"--svid-ttl: {float(ttl):g} is not between 10 and 86400 seconds" in capsys.readouterr().err
    assert not (tmp_path / "ca").exists()
