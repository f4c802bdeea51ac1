"""The state directory's location (flag, environment, XDG, home) and its first-use files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from controlplane.state_dir import default_location, ensure_local_operator, ensure_tokens_file
from controlplane.tokens import TokenTable


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MESHPROXY_STATE_DIR": "/srv/cp", "XDG_STATE_HOME": "/x", "HOME": "/h"}, "/srv/cp"),
        ({"XDG_STATE_HOME": "/x", "HOME": "/h"}, "/x/meshproxy"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/h"}, "/h/.local/state/meshproxy"),  # invalid: ignored
        ({"MESHPROXY_STATE_DIR": "", "HOME": "/h"}, "/h/.local/state/meshproxy"),
    ],
)
def test_the_location_follows_the_environment_then_xdg_then_home(
    environ: dict[str, str], expected: str
) -> None:
    assert default_location(environ) == Path(expected)


def test_a_missing_tokens_file_is_created_empty_and_private_and_an_existing_one_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "tokens"
    assert ensure_tokens_file(path)
    assert path.read_text() == "" and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("# mine\n")
    assert not ensure_tokens_file(path)
    assert path.read_text() == "# mine\n"


def test_the_local_operator_token_is_made_once_and_granted_in_the_management_tokens(tmp_path: Path) -> None:
    created = ensure_local_operator(tmp_path / "state", trust_domain="example.org")
    assert created is not None
    assert created.token_file.read_text() == created.token + "\n"
    assert stat.S_IMODE(created.token_file.stat().st_mode) == 0o600
    text = (tmp_path / "state" / "management-tokens").read_text()
    grant = TokenTable.parse(text, source="m", trust_domain="example.org").lookup(created.token)
    assert str(grant) == "spiffe://example.org/ns/ops/sa/meshctl"
    assert ensure_local_operator(tmp_path / "state", trust_domain="example.org") is None
    assert created.token_file.read_text() == created.token + "\n"
