"""Bootstrap tokens (`controlplane.tokens`): the file format, grants, reloads and appends."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controlplane.tokens import Grant, TokensFile, TokenTable, append_token, new_token
from meshproxy.errors import ConfigError, IdentityError
from meshproxy.identity.spiffe import SpiffeId

TD = "mesh.local"
TOKEN = "t" * 20


def parse(text: str) -> TokenTable:
    return TokenTable.parse(text, source="tokens.txt", trust_domain=TD)


@pytest.mark.parametrize(
    ("grant", "identity", "allowed"),
    [
        ("spiffe://mesh.local/ns/default/sa/web", "spiffe://mesh.local/ns/default/sa/web", True),
        ("spiffe://mesh.local/ns/default/sa/web", "spiffe://mesh.local/ns/default/sa/web2", False),
        ("spiffe://mesh.local/ns/default/sa/", "spiffe://mesh.local/ns/default/sa/web", True),
        ("spiffe://mesh.local/ns/default/sa/", "spiffe://mesh.local/ns/default/sa/web/v2", True),
        ("spiffe://mesh.local/ns/default/sa/", "spiffe://mesh.local/ns/default/sa", False),
        ("spiffe://mesh.local/ns/default/sa/", "spiffe://mesh.local/ns/default/sab", False),
        ("spiffe://mesh.local/ns/default/sa/", "spiffe://mesh.local/ns/other/sa/web", False),
        ("spiffe://mesh.local/", "spiffe://mesh.local/anything", True),
        ("spiffe://mesh.local/", "spiffe://other.local/anything", False),
    ],
)
def test_a_grant_is_an_exact_id_or_a_prefix_of_whole_segments(
    grant: str, identity: str, allowed: bool
) -> None:
    assert Grant.parse(grant).allows(SpiffeId.parse(identity)) is allowed
    assert str(Grant.parse(grant)) == grant


@pytest.mark.parametrize(
    "text", ["spiffe://mesh.local", "spiffe://mesh.local/a//", "https://x/y", "spiffe://M/x"]
)
def test_a_grant_that_is_not_an_identity_is_refused(text: str) -> None:
    with pytest.raises(IdentityError):
        Grant.parse(text)


def test_the_file_maps_tokens_to_grants_with_comments_and_blank_lines() -> None:
    table = parse(
        f"# bootstrap tokens\n\n{TOKEN} spiffe://mesh.local/ns/a/sa/web  # the web proxy\n"
        f"{'u' * 43} spiffe://mesh.local/ns/b/sa/\n"
    )
    assert table.lookup(TOKEN) == Grant(SpiffeId.parse("spiffe://mesh.local/ns/a/sa/web"))
    assert table.lookup("u" * 43) == Grant(SpiffeId.parse("spiffe://mesh.local/ns/b/sa"), prefix=True)
    assert table.lookup("v" * 43) is None
    assert TOKEN.encode() not in repr(table.grants).encode()  # only digests are held


def test_every_bad_line_is_reported_with_its_file_and_line() -> None:
    text = "\n".join(
        [
            f"{TOKEN} spiffe://mesh.local/ns/a/sa/web",
            "short spiffe://mesh.local/ns/a/sa/web",
            f"{'a' * 20}",
            f"{'b' * 20} spiffe://mesh.local/ns/a/sa/web extra",
            f"{'c' * 20} spiffe://mesh.local/ns/a/sa/",
            f"{'d' * 20} spiffe://other.local/ns/a/sa/web",
            f"{'e' * 20} spiffe://mesh.local/ns/../web",
            f"{TOKEN} spiffe://mesh.local/ns/a/sa/api",
        ]
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert [p.split(":", 2)[1] for p in info.value.problems] == ["2", "3", "4", "6", "7", "8"]
    problems = "\n".join(info.value.problems)
    assert "tokens.txt:2: token is 5 characters, fewer than 16" in problems
    assert "tokens.txt:3: expected '<token> <spiffe-id or prefix/>', found 1 field(s)" in problems
    assert "tokens.txt:6: spiffe://other.local/ns/a/sa/web is in trust domain 'other.local'" in problems
    assert "tokens.txt:7: SPIFFE ID" in problems
    assert "tokens.txt:8: token repeated (first on line 1)" in problems


def test_the_tokens_file_is_reread_when_it_changes_and_a_bad_edit_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN} spiffe://mesh.local/ns/a/sa/web\n")
    tokens = TokensFile(path, trust_domain=TD)
    assert tokens.table().lookup("x" * 20) is None
    append_token(path, "x" * 20, Grant.parse("spiffe://mesh.local/ns/a/sa/api"))
    assert str(tokens.table().lookup("x" * 20)) == "spiffe://mesh.local/ns/a/sa/api"
    path.write_text("not a valid line at all\n")
    assert tokens.table().lookup(TOKEN) is not None


def test_a_tokens_file_that_does_not_parse_at_start_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the tokens file"):
        TokensFile(tmp_path / "missing", trust_domain=TD)
    (tmp_path / "bad").write_text("x spiffe://mesh.local/a\n")
    with pytest.raises(ConfigError, match="bad:1: token is 1 characters"):
        TokensFile(tmp_path / "bad", trust_domain=TD)


def test_append_creates_a_private_file_and_completes_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    grant = Grant.parse("spiffe://mesh.local/ns/a/sa/")
    append_token(path, TOKEN, grant)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with path.open("a") as f:
        f.write("# no newline at the end")
    token = new_token()
    append_token(path, token, grant)
    table = parse(path.read_text())
    assert table.lookup(TOKEN) == grant and table.lookup(token) == grant


def test_new_tokens_are_long_url_safe_and_distinct() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 43 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)
