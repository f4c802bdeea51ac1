"""The CA state directory (`controlplane.ca_store`): first start, restart, and refusals."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.ca_store import CERT_FILE, KEY_FILE, load_or_create
from meshproxy.errors import ConfigError
from meshproxy.identity import certs

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("algorithm", list(certs.Algorithm), ids=lambda a: a.value)
def test_the_first_start_creates_the_ca_and_later_starts_load_it(
    tmp_path: Path, algorithm: certs.Algorithm
) -> None:
    ca_dir = tmp_path / "ca"
    created = load_or_create(ca_dir, trust_domain="mesh.local", now=NOW, algorithm=algorithm)
    assert created.algorithm is algorithm and created.trust_domain == "mesh.local"
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ca_dir / KEY_FILE).st_mode) == 0o600
    assert sorted(p.name for p in ca_dir.iterdir()) == [CERT_FILE, KEY_FILE]
    loaded = load_or_create(ca_dir, trust_domain="mesh.local", now=NOW + timedelta(days=1))
    assert loaded.cert == created.cert and certs.key_matches(loaded.cert, loaded.key)
    assert loaded.algorithm is algorithm  # the stored CA wins over the default algorithm


def test_a_key_without_its_certificate_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"precious")
    with pytest.raises(ConfigError, match=r"a CA key without ca\.crt"):
        load_or_create(tmp_path, trust_domain="mesh.local", now=NOW)
    assert (tmp_path / KEY_FILE).read_bytes() == b"precious"


def test_a_ca_of_another_trust_domain_or_expired_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path, trust_domain="mesh.local", now=NOW)
    with pytest.raises(ConfigError) as info:
        load_or_create(tmp_path, trust_domain="other.local", now=NOW + timedelta(days=400))
    problems = "\n".join(info.value.problems)
    assert "is the CA of trust domain 'mesh.local', not 'other.local'" in problems
    assert "expired at" in problems


def test_an_unreadable_certificate_or_a_bad_trust_domain_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / KEY_FILE).write_bytes(b"x")
    (tmp_path / "a" / CERT_FILE).write_bytes(b"not pem")
    with pytest.raises(ConfigError, match=r"ca\.crt: CA certificate"):
        load_or_create(tmp_path / "a", trust_domain="mesh.local", now=NOW)
    with pytest.raises(ConfigError, match=r"--trust-domain: .*lower-case"):
        load_or_create(tmp_path / "b", trust_domain="Mesh.Local", now=NOW)
