"""The injector: what it adds, for every workload kind, valid for every Kubernetes version from
1.29 (and 1.28's regular-container form), idempotent, and never blocking a pod it cannot mesh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from certs import make_ca
from k8s_workloads import DEPLOYMENT, WORKLOADS

from controlplane.k8s import annotations as names
from controlplane.k8s import validate
from controlplane.k8s.errors import InjectionError
from controlplane.k8s.inject import inject
from controlplane.k8s.manifests import inject_yaml
from controlplane.k8s.sidecar import Target
from meshproxy.config.bootstrap import parse_bootstrap

TRUST = make_ca().cert_pem.decode()
NATIVE = Target(TRUST)
LEGACY = Target(TRUST, kube_version=(1, 28))


def _template(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return spec["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else spec.get("template", doc)


def _with_annotations(notes: dict[str, str]) -> dict[str, Any]:
    template = json.loads(json.dumps(DEPLOYMENT["spec"]["template"]))
    template["metadata"]["annotations"] = notes
    return template


def _containers(pod: Any) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def test_every_workload_kind_is_injected_and_valid_for_every_kubernetes_version() -> None:
    result = inject_yaml(WORKLOADS, NATIVE)
    assert result.injected == [
        "Deployment default/web",
        "StatefulSet data/db",
        "DaemonSet default/agent",
        "Job default/report",
        "CronJob default/nightly",
        "Pod default/debug",
    ]
    assert result.warnings == []
    assert [d["kind"] for d in result.documents] == [d["kind"] for d in yaml.safe_load_all(WORKLOADS)]
    service = result.documents[1]
    assert service == list(yaml.safe_load_all(WORKLOADS))[1]  # not a workload: untouched
    assert validate.problems(result.documents) == []


def test_the_native_sidecar_starts_after_the_capture_and_before_the_application() -> None:
    doc = inject_yaml(WORKLOADS, NATIVE).documents[2]  # the StatefulSet, with its own init container
    spec = _template(doc)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["meshproxy-init", "meshproxy", "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["db"]
    sidecar = spec["initContainers"][1]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert "lifecycle" not in sidecar
    assert "restartPolicy" not in spec["initContainers"][0]


def test_before_1_29_the_sidecar_is_the_first_container_and_holds_the_application() -> None:
    result = inject_yaml(WORKLOADS, LEGACY)
    spec = _template(result.documents[0])["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["meshproxy-init"]
    assert [c["name"] for c in spec["containers"]] == ["meshproxy", "web"]
    sidecar = spec["containers"][0]
    assert "restartPolicy" not in sidecar and "startupProbe" not in sidecar
    assert sidecar["lifecycle"]["postStart"]["exec"]["command"][:2] == ["meshproxy", "wait-ready"]
    assert validate.problems(result.documents) == []


def test_the_sidecar_and_init_container_are_locked_down() -> None:
    spec = _template(inject_yaml(WORKLOADS, NATIVE).documents[0])["spec"]
    init, sidecar = spec["initContainers"]
    assert init["args"][0] == "iptables" and init["command"] == ["meshproxy"]
    assert init["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    ctx = sidecar["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (1337, 1337, True)
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    args = sidecar["args"]
    assert args[:4] == ["run", "-c", "/etc/meshproxy/bootstrap.json", "--sidecar"]
    option = dict(zip(args[4::2], args[5::2], strict=True))
    assert option == {
        "--ca-address": "meshproxy-controlplane.meshproxy-system.svc:15012",
        "--ca-trust": "/etc/meshproxy/ca.pem",
        "--identity": "spiffe://mesh.local/ns/default/sa/web",
        "--token-file": "/var/run/secrets/meshproxy/token",
        "--cert-dir": "/var/run/meshproxy/certs",
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    token = volumes["meshproxy-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == names.TOKEN_AUDIENCE
    assert volumes["meshproxy-certs"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts == {
        "/etc/meshproxy": "meshproxy-config",
        "/var/run/secrets/meshproxy": "meshproxy-token",
        "/var/run/meshproxy/certs": "meshproxy-certs",
    }


def test_the_bootstrap_the_pod_carries_is_one_meshproxy_accepts(tmp_path: Path) -> None:
    template = _with_annotations({names.PQ: "preferred"})
    pod = inject(template, "shop", NATIVE).pod
    notes = pod["metadata"]["annotations"]
    assert notes[names.TRUST_BUNDLE] == TRUST
    trust = tmp_path / "ca.pem"
    trust.write_text(notes[names.TRUST_BUNDLE])
    text = notes[names.BOOTSTRAP].replace("/etc/meshproxy/ca.pem", str(trust))
    config = parse_bootstrap(text, source="meshproxy.io/bootstrap")
    assert config is not None
    doc = json.loads(notes[names.BOOTSTRAP])
    assert doc["node"] == {"id": "web-v1.shop", "cluster": "web-v1.shop", "metadata": {names.PQ: "preferred"}}
    cluster = doc["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    assert cluster["transport_socket"]["typed_config"]["sni"] == "meshproxy-controlplane.meshproxy-system.svc"
    items = {
        i["path"]: i["fieldRef"]["fieldPath"] for i in pod["spec"]["volumes"][-3]["downwardAPI"]["items"]
    }
    assert items == {
        "bootstrap.json": "metadata.annotations['meshproxy.io/bootstrap']",
        "ca.pem": "metadata.annotations['meshproxy.io/trust-bundle']",
    }


def test_annotations_reach_the_containers() -> None:
    template = _with_annotations(
        {
            names.EXCLUDE_INBOUND_PORTS: "9000",
            names.EXCLUDE_OUTBOUND_PORTS: "5432,6379",
            names.EXCLUDE_INBOUND_CIDRS: "10.9.0.0/16",
            names.EXCLUDE_OUTBOUND_CIDRS: "169.254.169.254",
            names.CONCURRENCY: "2",
            names.PROXY_CPU: "200m",
            names.PROXY_MEMORY_LIMIT: "512Mi",
        }
    )
    pod = inject(template, "shop", NATIVE).pod
    init, sidecar = pod["spec"]["initContainers"]
    assert init["args"] == [
        "iptables",
        *("--exclude-inbound-ports", "15021,15090,9000"),
        *("--exclude-outbound-ports", "5432,6379"),
        *("--exclude-inbound-cidrs", "10.9.0.0/16"),
        *("--exclude-outbound-cidrs", "169.254.169.254/32"),
    ]
    assert sidecar["args"][-2:] == ["--concurrency", "2"]
    # a lone memory limit is also the request (Kubernetes' rule), so no default request above it
    assert sidecar["resources"] == {"requests": {"cpu": "200m"}, "limits": {"memory": "512Mi"}}
    assert validate.problems([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, **pod}]) == []


def test_with_a_cni_plugin_there_is_no_init_container_and_no_net_admin() -> None:
    pod = inject(_with_annotations({names.CNI: "true"}), "shop", NATIVE).pod
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["meshproxy"]
    assert "NET_ADMIN" not in json.dumps(pod)
    status = json.loads(pod["metadata"]["annotations"][names.STATUS])
    assert status["initContainers"] == ["meshproxy"]


@pytest.mark.parametrize("target", [NATIVE, LEGACY], ids=["native", "1.28"])
def test_injecting_twice_is_injecting_once(target: Target) -> None:
    once = inject_yaml(WORKLOADS, target)
    twice = inject_yaml(once.yaml(), target)
    assert twice.injected == [] and twice.warnings == []
    assert twice.yaml() == once.yaml()


def test_the_input_is_never_modified() -> None:
    template = _with_annotations({})
    before = json.dumps(template, sort_keys=True)
    assert inject(template, "shop", NATIVE).changed
    assert json.dumps(template, sort_keys=True) == before


def test_a_workload_without_a_namespace_gets_the_one_it_was_injected_for() -> None:
    result = inject_yaml(WORKLOADS, NATIVE, namespace="shop")
    assert [d["metadata"].get("namespace") for d in result.documents] == [
        "shop",
        None,  # the Service is not touched
        "data",  # its own
        "shop",
        "shop",
        "shop",
        "shop",
    ]
    sidecar = _template(result.documents[0])["spec"]["initContainers"][1]
    assert "spiffe://mesh.local/ns/shop/sa/web" in sidecar["args"]


def test_an_opted_out_pod_is_left_alone_silently() -> None:
    template = _with_annotations({})
    template["metadata"]["labels"][names.INJECT] = "false"
    done = inject(template, "shop", NATIVE)
    assert (done.changed, done.warnings, done.pod) == (False, (), template)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s.update(hostNetwork=True), "spec.hostNetwork: the pod uses the node's network"),
        (lambda s: s.update(containers=[]), "spec.containers: the pod has no containers"),
        (
            lambda s: s["containers"].append({"name": "meshproxy", "image": "x"}),
            "spec.containers[1].name: 'meshproxy' is the name of an injected one",
        ),
        (
            lambda s: s.update(volumes=[{"name": "meshproxy-certs", "emptyDir": {}}]),
            "spec.volumes[0].name: 'meshproxy-certs' is the name of an injected one",
        ),
    ],
)
def test_a_pod_that_cannot_be_injected_is_left_as_it_is_with_the_reason(change: Any, reason: str) -> None:
    template = _with_annotations({})
    change(template["spec"])
    done = inject(template, "shop", NATIVE, "Deployment shop/web: spec.template")
    assert not done.changed and done.pod is template
    (warning,) = done.warnings
    assert warning.startswith(f"Deployment shop/web: spec.template: not injected: {reason}")


def test_bad_annotations_leave_the_pod_alone_and_name_each_one() -> None:
    done = inject(_with_annotations({names.CONCURRENCY: "many", names.PQ: "maybe"}), "shop", NATIVE, "pod x")
    assert not done.changed
    assert len(done.warnings) == 2
    assert all(
        w.startswith('pod x: not injected: metadata.annotations["meshproxy.io/') for w in done.warnings
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("kind: [", "x.yaml: not valid YAML"),
        ("- just\n- a list\n", "x.yaml: document 1 is not a Kubernetes object"),
        ("apiVersion: v1\nkind: Service\n---\n42\n", "x.yaml: document 2 is not a Kubernetes object"),
    ],
)
def test_input_that_is_not_manifests_is_refused_naming_the_document(text: str, error: str) -> None:
    with pytest.raises(InjectionError, match=error):
        inject_yaml(text, NATIVE, source="x.yaml")


def test_a_list_s_items_are_injected() -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": list(yaml.safe_load_all(WORKLOADS))}
    result = inject_yaml(yaml.safe_dump(listed), NATIVE)
    assert len(result.injected) == 6
    assert result.documents[0]["items"] == inject_yaml(WORKLOADS, NATIVE).documents
