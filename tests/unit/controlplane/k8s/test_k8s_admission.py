"""The webhook's AdmissionReview protocol, sans I/O: patches that an independent RFC 6902
implementation (jsonpatch) turns into exactly the injected pod, and every pod admitted."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from certs import make_ca
from hypothesis import given
from hypothesis import strategies as st
from k8s_workloads import DEPLOYMENT, admission_review, api_server_pod

from controlplane.k8s import admission, validate
from controlplane.k8s import annotations as names
from controlplane.k8s.inject import inject
from controlplane.k8s.sidecar import Target

TARGET = Target(make_ca().cert_pem.decode())


def _pod(**labels: str) -> dict[str, Any]:
    template = json.loads(json.dumps(DEPLOYMENT["spec"]["template"]))
    template["metadata"]["labels"] |= labels
    return api_server_pod(template, "shop")


def _review(review: dict[str, Any], target: Target = TARGET) -> admission.Answer:
    return admission.review(json.dumps(review).encode(), target)


def _patched(pod: dict[str, Any], answer: admission.Answer) -> dict[str, Any]:
    patch = json.loads(base64.b64decode(answer.body["response"]["patch"]))
    return jsonpatch.apply_patch(pod, patch)  # type: ignore[no-any-return]


def test_a_create_is_answered_with_the_patch_that_makes_the_injected_pod() -> None:
    pod = _pod()
    review = admission_review(pod)
    answer = _review(review)
    assert answer.status == 200 and answer.outcome == "injected"
    body = answer.body
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = body["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert "warnings" not in response
    patched = _patched(pod, answer)
    assert patched == inject(pod, "shop", TARGET).pod
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["meshproxy-init", "meshproxy"]
    assert "spiffe://mesh.local/ns/shop/sa/web" in patched["spec"]["initContainers"][1]["args"]
    assert validate.problems([patched]) == []


def test_the_patch_escapes_the_annotation_names() -> None:
    answer = _review(admission_review(_pod()))
    patch = json.loads(base64.b64decode(answer.body["response"]["patch"]))
    paths = [op["path"] for op in patch]
    assert "/metadata/annotations" in paths  # the pod had none: one add of the whole object
    pod = _pod()
    pod["metadata"]["annotations"] = {"team": "shop"}
    patch = json.loads(base64.b64decode(_review(admission_review(pod)).body["response"]["patch"]))
    added = {op["path"]: op for op in patch if op["op"] == "add"}
    assert set(added) >= {
        "/metadata/annotations/meshproxy.io~1status",
        "/metadata/annotations/meshproxy.io~1bootstrap",
        "/metadata/annotations/meshproxy.io~1trust-bundle",
        "/spec/initContainers",
    }
    assert not any(op["path"].startswith("/metadata/annotations/team") for op in patch)


def test_a_dry_run_gets_the_same_patch_and_is_not_counted_as_an_injection() -> None:
    pod = _pod()
    real = _review(admission_review(pod))
    dry = _review(admission_review(pod, dry_run=True))
    assert dry.outcome == "dry-run"
    assert dry.body["response"]["patch"] == real.body["response"]["patch"]


def test_an_update_is_allowed_unchanged() -> None:
    pod = _pod()
    pod["metadata"]["name"] = "web-5d8f7c9b4-abcde"
    answer = _review(admission_review(pod, operation="UPDATE", old=pod))
    assert answer.outcome == "unchanged"
    assert set(answer.body["response"]) == {"uid", "allowed"} and answer.body["response"]["allowed"] is True


def test_an_already_injected_pod_is_allowed_unchanged() -> None:
    pod = _pod()
    injected = _patched(pod, _review(admission_review(pod)))
    answer = _review(admission_review(injected))
    assert answer.outcome == "unchanged" and "patch" not in answer.body["response"]


def test_an_opted_out_pod_is_allowed_unchanged() -> None:
    answer = _review(admission_review(_pod(**{names.INJECT: "false"})))
    assert answer.outcome == "unchanged" and "patch" not in answer.body["response"]


def test_another_kind_is_allowed_unchanged() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}}
    answer = _review(admission_review(service, kind="Service", resource="services"))
    assert answer.outcome == "unchanged" and answer.body["response"]["allowed"] is True


def test_a_pod_that_cannot_be_injected_is_admitted_with_the_reason_as_a_warning() -> None:
    pod = _pod()
    pod["spec"]["hostNetwork"] = True
    pod["metadata"]["annotations"] = {names.CONCURRENCY: "lots"}
    answer = _review(admission_review(pod))
    response = answer.body["response"]
    assert answer.outcome == "warned" and response["allowed"] is True and "patch" not in response
    assert response["warnings"] == [
        "pod shop/web-5d8f7c9b4-*: not injected: spec.hostNetwork: the pod uses the node's network; "
        "capturing it would capture the node's",
        'pod shop/web-5d8f7c9b4-*: not injected: metadata.annotations["meshproxy.io/concurrency"]: '
        "'lots' is not a number of workers (1-64)",
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not json", "the body is not JSON"),
        (b"[]", "not an admission.k8s.io/v1 AdmissionReview"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
            "not an",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "no request.uid",
        ),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}}
            ).encode(),
            "no request.uid",
        ),
    ],
)
def test_a_body_that_is_no_admission_review_is_a_400_saying_why(body: bytes, reason: str) -> None:
    answer = admission.review(body, TARGET)
    assert answer.status == 400 and answer.outcome == "malformed"
    assert reason in answer.body["error"]


def test_a_create_without_an_object_is_admitted_with_a_warning() -> None:
    answer = _review(admission_review(None))
    assert answer.body["response"]["allowed"] is True
    assert answer.body["response"]["warnings"] == ["request.object: not a Pod object; not injected"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(JSON, JSON)
def test_json_patch_turns_any_document_into_any_other(before: Any, after: Any) -> None:
    if not isinstance(before, dict) or not isinstance(after, dict):
        before, after = {"x": before}, {"x": after}
    assert jsonpatch.apply_patch(before, admission.json_patch(before, after)) == after
