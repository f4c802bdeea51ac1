"""``meshctl install`` / ``uninstall`` / ``inject``: manifests valid for every Kubernetes version
from 1.29, least-privilege RBAC, the webhook's caBundle and policies, stable reinstalls."""

from __future__ import annotations

import base64
import io
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_workloads import WORKLOADS

from controlplane import meshctl
from controlplane.k8s import annotations as names
from controlplane.k8s import crds, install, validate


def _meshctl(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> tuple[int, str, str]:
    code = meshctl.main(["--state-dir", str(state), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _installed(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = _meshctl(capsys, state, "install", *args)
    assert (code, err) == (0, "")
    return list(yaml.safe_load_all(out))


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_install_prints_every_object_valid_for_every_kubernetes_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _installed(capsys, tmp_path)
    assert [d["kind"] for d in docs] == [
        "Namespace",
        *["CustomResourceDefinition"] * len(crds.KINDS),
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
    ]
    assert validate.problems(docs) == []
    namespace = docs[0]
    assert namespace["metadata"]["labels"][names.INJECT] == "disabled"


def test_install_again_prints_the_same_manifests_with_the_same_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _installed(capsys, tmp_path) == _installed(capsys, tmp_path)
    assert (tmp_path / "kubernetes-ca" / "ca.crt").exists()


def test_the_rbac_is_least_privilege(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (role,) = _by_kind(_installed(capsys, tmp_path), "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    read = {"get", "list", "watch"}
    plurals = [k.plural for k in crds.KINDS]
    expected = {
        *(("", r, v) for r in ("services", "pods", "namespaces", "nodes") for v in read),
        *(("discovery.k8s.io", "endpointslices", v) for v in read),
        *(("meshproxy.io", p, v) for p in plurals for v in read),
        *(("meshproxy.io", f"{p}/status", v) for p in plurals for v in ("update", "patch")),
        ("authentication.k8s.io", "tokenreviews", "create"),
    }
    assert granted == expected
    (binding,) = _by_kind(_installed(capsys, tmp_path), "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "meshproxy-controlplane", "namespace": "meshproxy-system"}
    ]


def test_the_webhook_trusts_the_ca_and_never_blocks_a_pod(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _installed(capsys, tmp_path)
    (config,) = _by_kind(docs, "MutatingWebhookConfiguration")
    ca_pem = (tmp_path / "kubernetes-ca" / "ca.crt").read_bytes()
    (secret,) = _by_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca_pem
    by_namespace, by_pod = config["webhooks"]
    for hook in (by_namespace, by_pod):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem
        assert hook["clientConfig"]["service"] == {
            "name": "meshproxy-controlplane",
            "namespace": "meshproxy-system",
            "path": "/inject",
            "port": 443,
        }
        assert (hook["failurePolicy"], hook["sideEffects"], hook["admissionReviewVersions"]) == (
            "Ignore",
            "None",
            ["v1"],
        )
        assert hook["rules"][0]["operations"] == ["CREATE"] and hook["rules"][0]["resources"] == ["pods"]
    assert by_namespace["namespaceSelector"] == {"matchLabels": {names.INJECT: "enabled"}}
    assert by_pod["objectSelector"] == {"matchLabels": {names.INJECT: "true"}}
    (service,) = _by_kind(docs, "Service")
    assert {p["port"]: p["targetPort"] for p in service["spec"]["ports"]} == {15012: 15012, 443: 15017}


def test_the_controlplane_runs_locked_down_with_its_ca_and_webhook(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = _installed(capsys, tmp_path, "--image", "registry.example/meshproxy:1.0", "--kube-version", "1.28")
    (deployment,) = _by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/meshproxy:1.0"
    args = container["args"]
    option = {a: b for a, b in itertools.pairwise(args) if a.startswith("--")}
    assert option["--webhook-address"] == "0.0.0.0:15017"
    assert option["--webhook-image"] == "registry.example/meshproxy:1.0"
    assert option["--kube-version"] == "1.28"
    assert option["--xds-tls-san"] == "meshproxy-controlplane.meshproxy-system.svc"
    assert option["--xds-address"] == "127.0.0.1:15010"
    assert option["--ca-dir"] == install.CA_MOUNT
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"] and ctx["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "meshproxy-controlplane"


def test_install_dry_run_validates_and_says_against_what(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _meshctl(capsys, tmp_path, "install", "--dry-run")
    versions = validate.versions()
    assert (code, err) == (0, "")
    assert out == f"12 objects: valid against Kubernetes {versions[0]} to {versions[-1]} (strict)\n"


def test_uninstall_names_what_install_creates_webhook_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    installed = _installed(capsys, tmp_path)
    code, out, _ = _meshctl(capsys, tmp_path, "uninstall")
    assert code == 0
    removed = list(yaml.safe_load_all(out))
    assert removed == [
        {
            "apiVersion": d["apiVersion"],
            "kind": d["kind"],
            "metadata": {k: v for k, v in d["metadata"].items() if k in ("name", "namespace")},
        }
        for d in reversed(installed)
    ]


def test_inject_reads_stdin_and_uses_the_installed_ca(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(capsys, tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(WORKLOADS))
    code, out, err = _meshctl(capsys, tmp_path, "inject", "-f", "-", "--namespace", "shop")
    assert (code, err) == (0, "")
    docs = list(yaml.safe_load_all(out))
    notes = docs[0]["spec"]["template"]["metadata"]["annotations"]
    assert notes[names.TRUST_BUNDLE] == (tmp_path / "kubernetes-ca" / "ca.crt").read_text()
    assert validate.problems(docs) == []


def test_inject_says_why_a_workload_was_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(capsys, tmp_path)
    text = WORKLOADS.replace("serviceAccountName: web", "serviceAccountName: web\n      hostNetwork: true")
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, err = _meshctl(capsys, tmp_path, "inject", "-f", "-")
    assert code == 0
    assert err.startswith(
        "meshctl inject: Deployment default/web: spec.template: not injected: spec.hostNetwork"
    )
    first = next(iter(yaml.safe_load_all(out)))
    assert "initContainers" not in first["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("inject", "-f", "missing.yaml"), 2, "meshctl inject: --trust-bundle: cannot read"),
        (("install", "--kube-version", "one"), 2, "'one' is not a Kubernetes version"),
        (("install", "--replicas", "0"), 2, "meshctl install: --replicas: 0 is not a number of replicas"),
    ],
)
def test_usage_errors_name_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], code: int, error: str
) -> None:
    try:
        got, _, err = _meshctl(capsys, tmp_path, *args)
    except SystemExit as exc:  # argparse's own usage errors
        got, err = int(exc.code or 0), capsys.readouterr().err
    assert got == code and error in err


def test_inject_refuses_a_file_that_is_not_manifests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _installed(capsys, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    code, out, err = _meshctl(capsys, tmp_path, "inject", "-f", str(bad))
    assert (code, out) == (1, "") and err.startswith(f"meshctl inject: {bad}: not valid YAML")


def test_a_ca_of_another_trust_domain_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _installed(capsys, tmp_path)
    code, _, err = _meshctl(capsys, tmp_path, "install", "--trust-domain", "other.example")
    assert code == 2 and "is the CA of trust domain 'mesh.local', not 'other.example'" in err
