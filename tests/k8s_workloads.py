"""Kubernetes objects for the injection, webhook and install tests, shaped as a cluster has them.

Import it as ``from k8s_workloads import ...`` (``tests/`` is on ``sys.path``: see certs.py).

- `WORKLOADS`: one manifest of every kind the injector handles, plus a Service it must leave
  alone, as a user writes them (multi-document YAML).
- `api_server_pod`: the Pod the API server hands a mutating webhook when a Deployment's
  ReplicaSet creates one: ``generateName`` and no ``name``, the ReplicaSet owner reference, the
  ``pod-template-hash`` label, the defaults already applied (restart and DNS policy, scheduler,
  grace period, termination message fields, pull policy, the service account), the
  ``kube-api-access-*`` projected volume and its mount (the ServiceAccount admission plugin runs
  before webhooks), and an empty status. Taken from a kind cluster's AdmissionReview (1.30).
- `admission_review`: the AdmissionReview v1 request around it, every field the API server
  sends (``requestKind``/``requestResource``, ``userInfo``, ``options``, ``oldObject``, ``dryRun``).

Must not depend on: the injector (these are its inputs).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import yaml

WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v1}
    spec:
      serviceAccountName: web
      containers:
        - name: web
          image: registry.example/web:1.0
          ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      initContainers:
        - {name: migrate, image: registry.example/db:1.0, command: [migrate]}
      containers:
        - {name: db, image: registry.example/db:1.0}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: registry.example/agent:1.0}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  template:
    metadata: {labels: {app: report}}
    spec:
      restartPolicy: Never
      containers: [{name: report, image: registry.example/report:1.0}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: nightly}}
        spec:
          restartPolicy: OnFailure
          containers: [{name: nightly, image: registry.example/report:1.0}]
---
apiVersion: v1
kind: Pod
metadata: {name: debug, labels: {app: debug}}
spec:
  containers: [{name: shell, image: registry.example/shell:1.0, command: [sleep, infinity]}]
"""

DEPLOYMENT = yaml.safe_load(WORKLOADS.split("---")[0])


def api_server_pod(template: dict[str, Any], namespace: str, owner: str = "web") -> dict[str, Any]:
    """The Pod the API server sends the webhook for one replica of Deployment ``owner``."""
    pod_hash = "5d8f7c9b4"
    metadata = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template["spec"])
    account = spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", account)
    token_volume = "kube-api-access-x7q2k"
    for container in spec["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("resources", {})
        container["terminationMessagePath"] = "/dev/termination-log"
        container["terminationMessagePolicy"] = "File"
        container.setdefault("volumeMounts", []).append(
            {
                "name": token_volume,
                "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            }
        )
    spec.setdefault("volumes", []).append(
        {
            "name": token_volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec["tolerations"] = [
        {
            "key": f"node.kubernetes.io/{t}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
        for t in ("not-ready", "unreachable")
    ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": f"{owner}-{pod_hash}-",
            "namespace": namespace,
            "creationTimestamp": None,
            "labels": {**(metadata.get("labels") or {}), "pod-template-hash": pod_hash},
            **({"annotations": metadata["annotations"]} if metadata.get("annotations") else {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{owner}-{pod_hash}",
                    "uid": "3c0f6a9e-8a52-4a57-a0f5-0b6a2f6f2a10",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-12-08T02:50:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:generateName": {}}},
                }
            ],
        },
        "spec": spec,
        "status": {},
    }


def admission_review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    namespace: str = "shop",
    dry_run: bool = False,
    old: dict[str, Any] | None = None,
    kind: str = "Pod",
    resource: str = "pods",
) -> dict[str, Any]:
    """The AdmissionReview v1 the API server POSTs for ``operation`` on ``obj``."""
    gvk = {"group": "", "version": "v1", "kind": kind}
    gvr = {"group": "", "version": "v1", "resource": resource}
    options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[
        operation
    ]
    name = (obj or old or {}).get("metadata", {}).get("name", "")
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "uid": "8b7e4f1c-5d0e-4b53-9d2a-1f0c3e6d7a88",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        },
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"},
    }
    if name:
        request["name"] = name
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}
