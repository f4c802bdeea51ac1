"""The committed generated code matches the protos it was generated from (see proto/README.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from meshproxy import _gen

PROTO_DIR = Path(__file__).resolve().parents[3] / "proto"


def test_generated_code_is_from_the_protos_in_the_tree() -> None:
    current = {
        str(p.relative_to(PROTO_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(PROTO_DIR.rglob("*.proto"))
    }
    assert current == _gen.PROTO_SHA256, "a proto changed: regenerate with `python proto/generate.py`"


def test_the_generated_service_keeps_its_wire_name() -> None:
    from meshproxy._gen.ca.v1 import ca_pb2

    service = ca_pb2.DESCRIPTOR.services_by_name["CertificateAuthority"]
    assert service.full_name == "meshproxy.ca.v1.CertificateAuthority"
    assert [m.name for m in service.methods] == ["Sign", "TrustBundle"]
