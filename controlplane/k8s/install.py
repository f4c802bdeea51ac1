"""``meshctl install``'s manifests: everything a cluster needs to run the mesh, as data.

Owns the objects and their order (``kubectl apply -f -`` creates them in it): the Namespace
(`SYSTEM_NAMESPACE`, never injected itself), the CRDs (`controlplane.k8s.crds`), the
controlplane's ServiceAccount, its ClusterRole and binding, the Secret holding the CA (the
controlplane issues every SVID with it; the webhook's ``caBundle`` and the sidecars' trust
bundle are its certificate), the controlplane Deployment and its Service, and the
MutatingWebhookConfiguration. ``uninstall`` lists the same objects in reverse order, the
webhook first so that nothing is injected while the rest goes.

Least privilege, and why each rule is there: ``get/list/watch`` on Services, EndpointSlices,
Pods and Namespaces (the Kubernetes source), and on the four mesh CRDs; ``update/patch`` on
their ``status`` subresources only (the Accepted/Programmed conditions); ``create`` on
TokenReviews (the CA authenticates a CSR's service-account token). Nothing else: no Secrets
(the CA arrives as a mounted volume), no writes to workloads, no webhooks management.

The webhook: two entries, so that a namespace opts in with the label ``meshproxy.io/inject:
enabled`` and a pod elsewhere opts in with the pod label ``meshproxy.io/inject: "true"`` (a
pod label ``"false"`` opts out everywhere); CREATE of pods only; ``failurePolicy: Ignore`` (a
controlplane that is down or broken admits pods unchanged, never blocks them: they run
without a sidecar until recreated); ``sideEffects: None`` (so dry-run requests are sent too);
``reinvocationPolicy: Never`` (a reinvocation would change nothing: an injected pod carries
``meshproxy.io/status``).

Must not depend on: a Kubernetes client, grpc, asyncio.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from controlplane.k8s import annotations as names
from controlplane.k8s import crds
from controlplane.k8s.sidecar import NATIVE_SIDECARS
from controlplane.k8s.webhook_server import PATH as WEBHOOK_PATH
from meshproxy.identity import certs

NAME = names.CONTROLPLANE_SERVICE
WEBHOOK_NAME = "meshproxy-sidecar-injector"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "meshproxy"}
CA_SECRET = "meshproxy-ca"
CA_MOUNT = "/etc/meshproxy/ca"
STATE_MOUNT = "/var/lib/meshproxy"
ADMIN_PORT = 15014  # /metrics and /ready (Istio's istiod monitoring port)
PLAIN_XDS = "127.0.0.1:15010"  # meshctl through kubectl exec / port-forward only


@dataclass(frozen=True, slots=True)
class Options:
    """What ``meshctl install`` is told: the image, the mesh's trust domain, the CA, the cluster."""

    ca: certs.CertificateAuthority
    image: str = "localhost/meshproxy:latest"
    namespace: str = names.SYSTEM_NAMESPACE
    kube_version: tuple[int, int] = NATIVE_SIDECARS
    replicas: int = 1

    @property
    def host(self) -> str:
        return names.controlplane_host(self.namespace)


def manifests(options: Options) -> list[dict[str, Any]]:
    """Every object, in the order ``kubectl apply`` should create them."""
    return [
        _namespace(options),
        *crds.custom_resource_definitions(),
        _meta("v1", "ServiceAccount", NAME, options.namespace),
        _cluster_role(),
        _cluster_role_binding(options),
        _ca_secret(options),
        _deployment(options),
        _service(options),
        _webhook_configuration(options),
    ]


def uninstall(namespace: str = names.SYSTEM_NAMESPACE) -> list[dict[str, Any]]:
    """What `manifests` creates, names only, in the order to delete it (``kubectl delete -f -``):
    the webhook first, the Namespace last; deleting the CRDs deletes every mesh policy object."""
    objects = [
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", WEBHOOK_NAME, None),
        ("v1", "Service", NAME, namespace),
        ("apps/v1", "Deployment", NAME, namespace),
        ("v1", "Secret", CA_SECRET, namespace),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", NAME, None),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", NAME, None),
        ("v1", "ServiceAccount", NAME, namespace),
        *((crds.CRD_API_VERSION, "CustomResourceDefinition", k.name, None) for k in reversed(crds.KINDS)),
        ("v1", "Namespace", namespace, None),
    ]
    return [
        {"apiVersion": api, "kind": kind, "metadata": {"name": name} | ({"namespace": ns} if ns else {})}
        for api, kind, name, ns in objects
    ]


def _meta(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata}


def _namespace(options: Options) -> dict[str, Any]:
    ns = _meta("v1", "Namespace", options.namespace)
    ns["metadata"]["labels"][names.INJECT] = names.NAMESPACE_DISABLED
    return ns


def _cluster_role() -> dict[str, Any]:
    read = ["get", "list", "watch"]
    plurals = [k.plural for k in crds.KINDS]
    role = _meta("rbac.authorization.k8s.io/v1", "ClusterRole", NAME)
    role["rules"] = [
        {"apiGroups": [""], "resources": ["services", "pods", "namespaces", "nodes"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": [crds.GROUP], "resources": plurals, "verbs": read},
        {
            "apiGroups": [crds.GROUP],
            "resources": [f"{p}/status" for p in plurals],
            "verbs": ["update", "patch"],
        },
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    ]
    return role


def _cluster_role_binding(options: Options) -> dict[str, Any]:
    binding = _meta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", NAME)
    binding["roleRef"] = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    binding["subjects"] = [{"kind": "ServiceAccount", "name": NAME, "namespace": options.namespace}]
    return binding


def _ca_secret(options: Options) -> dict[str, Any]:
    secret = _meta("v1", "Secret", CA_SECRET, options.namespace)
    secret["type"] = "Opaque"
    secret["data"] = {
        "ca.crt": _b64(certs.certs_to_pem([options.ca.cert])),
        "ca.key": _b64(certs.key_to_pem(options.ca.key)),
    }
    return secret


def _deployment(options: Options) -> dict[str, Any]:
    major, minor = options.kube_version
    args = ["serve", "--kubernetes", "--trust-domain", options.ca.trust_domain]
    args += ["--ca-dir", CA_MOUNT, "--state-dir", STATE_MOUNT, "--xds-address", PLAIN_XDS]
    args += ["--xds-tls-address", f"0.0.0.0:{names.XDS_TLS_PORT}", "--xds-tls-san", options.host]
    args += ["--admin-address", f"0.0.0.0:{ADMIN_PORT}"]
    args += ["--webhook-address", f"0.0.0.0:{names.WEBHOOK_PORT}", "--webhook-image", options.image]
    args += ["--kube-version", f"{major}.{minor}"]
    container = {
        "name": "controlplane",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["controlplane"],
        "args": args,
        "ports": [
            {"name": "grpc-xds-tls", "containerPort": names.XDS_TLS_PORT, "protocol": "TCP"},
            {"name": "https-webhook", "containerPort": names.WEBHOOK_PORT, "protocol": "TCP"},
            {"name": "http-monitoring", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "securityContext": {
            "runAsUser": names.SIDECAR_UID,
            "runAsGroup": names.SIDECAR_UID,
            "runAsNonRoot": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "ca", "mountPath": CA_MOUNT, "readOnly": True},
            {"name": "state", "mountPath": STATE_MOUNT},
        ],
    }
    deployment = _meta("apps/v1", "Deployment", NAME, options.namespace)
    deployment["spec"] = {
        "replicas": options.replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
        "template": {
            "metadata": {"labels": dict(LABELS)},
            "spec": {
                "serviceAccountName": NAME,
                "securityContext": {
                    "fsGroup": names.SIDECAR_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [
                    {"name": "ca", "secret": {"secretName": CA_SECRET, "defaultMode": 0o440}},
                    {"name": "state", "emptyDir": {}},
                ],
            },
        },
    }
    return deployment


def _service(options: Options) -> dict[str, Any]:
    service = _meta("v1", "Service", NAME, options.namespace)
    service["spec"] = {
        "selector": {"app.kubernetes.io/name": NAME},
        "ports": [
            {"name": "grpc-xds-tls", "port": names.XDS_TLS_PORT, "targetPort": names.XDS_TLS_PORT},
            {"name": "https-webhook", "port": 443, "targetPort": names.WEBHOOK_PORT},
        ],
    }
    return service


def _webhook_configuration(options: Options) -> dict[str, Any]:
    client = {
        "service": {"name": NAME, "namespace": options.namespace, "path": WEBHOOK_PATH, "port": 443},
        "caBundle": _b64(certs.certs_to_pem([options.ca.cert])),
    }
    common = {
        "clientConfig": client,
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
        "reinvocationPolicy": "Never",
    }
    by_namespace = common | {
        "name": "namespace.sidecar.meshproxy.io",
        "namespaceSelector": {"matchLabels": {names.INJECT: names.NAMESPACE_ENABLED}},
        "objectSelector": {
            "matchExpressions": [{"key": names.INJECT, "operator": "NotIn", "values": ["false"]}]
        },
    }
    by_pod = common | {
        "name": "object.sidecar.meshproxy.io",
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": names.INJECT,
                    "operator": "NotIn",
                    "values": [names.NAMESPACE_ENABLED, names.NAMESPACE_DISABLED],
                },
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", options.namespace],
                },
            ]
        },
        "objectSelector": {"matchLabels": {names.INJECT: "true"}},
    }
    config = _meta("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", WEBHOOK_NAME)
    config["webhooks"] = [by_namespace, by_pod]
    return config


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
