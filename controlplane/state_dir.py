"""The controlplane's state directory: what ``controlplane serve`` keeps when no flag says where.

Owns the directory's location and layout, and its creation on first use, so that a newcomer's
first ``controlplane serve`` starts with no flags and ``meshctl`` on the same machine works with
none either:

    <state>/ca/                the CA (`controlplane.ca_store`), unless ``--ca-dir``
    <state>/tokens             bootstrap tokens for CSRs, created empty, unless ``--tokens``
    <state>/management-tokens  management tokens, unless ``--management-tokens``; created at
                               first use with one token, for the local meshctl
    <state>/meshctl.token      that token alone (mode 0600): what meshctl reads by default

The location: ``--state-dir``, else ``$MESHPROXY_STATE_DIR``, else ``$XDG_STATE_HOME/meshproxy``,
else ``~/.local/state/meshproxy`` (the XDG base directory default). The directory is 0700 and
every token file 0600: they are credentials.

Must not depend on: grpc, asyncio, the CA, the servers (meshctl imports it for the location).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controlplane.tokens import Grant, append_token, new_token

ENV = "MESHPROXY_STATE_DIR"
CA_DIR = "ca"
TOKENS = "tokens"
MANAGEMENT_TOKENS = "management-tokens"
MESHCTL_TOKEN = "meshctl.token"
LOCAL_OPERATOR = "ns/ops/sa/meshctl"  # the path of the local meshctl's identity


def default_location(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get(ENV):
        return Path(environ[ENV])
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid, ignore it
        return Path(xdg) / "meshproxy"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "meshproxy"


def ensure_tokens_file(path: Path) -> bool:
    """Creates ``path`` empty (mode 0600, parents 0700) when it does not exist; whether it did."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class LocalOperator:
    """The management token created for the local meshctl, and the file that holds it."""

    token: str
    token_file: Path
    identity: Grant


def ensure_local_operator(state: Path, *, trust_domain: str) -> LocalOperator | None:
    """Creates ``state``'s management tokens file with one token for the local meshctl (and
    ``meshctl.token`` beside it) when the tokens file does not exist; None when it did.

    ``meshctl.token`` is written first: a start interrupted between the two files leaves no
    tokens file, and the next start makes both again."""
    tokens = state / MANAGEMENT_TOKENS
    if tokens.exists():
        return None
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    token, grant = new_token(), Grant.parse(f"spiffe://{trust_domain}/{LOCAL_OPERATOR}")
    token_file = state / MESHCTL_TOKEN
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    append_token(tokens, token, grant)
    return LocalOperator(token, token_file, grant)
