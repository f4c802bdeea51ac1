"""Kubernetes objects as the API server returns them, built small: Services, EndpointSlices, Pods,
Nodes and the meshproxy.io custom resources, for the discovery tests (unit and integration)."""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]

SERVICES = "/api/v1/services"
PODS = "/api/v1/pods"
NODES = "/api/v1/nodes"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"


def service(namespace: str, name: str, cluster_ip: str, ports: list[JsonObject] | None = None) -> JsonObject:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint(
    ip: str,
    pod: str | None = None,
    *,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    zone: str | None = None,
    node: str | None = None,
) -> JsonObject:
    e: JsonObject = {
        "addresses": [ip],
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
    }
    if pod:
        e["targetRef"] = {"kind": "Pod", "name": pod}
    if zone:
        e["zone"] = zone
    if node:
        e["nodeName"] = node
    return e


def endpoint_slice(
    namespace: str,
    name: str,
    service_name: str,
    endpoints: list[JsonObject],
    port: int = 8080,
    port_name: str = "http",
) -> JsonObject:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def pod(
    namespace: str,
    name: str,
    *,
    service_account: str = "default",
    labels: dict[str, str] | None = None,
    injected: bool = True,
    node: str = "",
) -> JsonObject:
    annotations = {"meshproxy.io/status": '{"version":1}'} if injected else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": labels or {},
            "annotations": annotations,
        },
        "spec": {
            "serviceAccountName": service_account,
            "nodeName": node,
            "containers": [{"name": "app", "image": "app"}],
        },
        "status": {"phase": "Running"},
    }


def node(name: str, region: str = "", zone: str = "") -> JsonObject:
    labels = {}
    if region:
        labels["topology.kubernetes.io/region"] = region
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def custom(kind: str, namespace: str, name: str, spec: JsonObject) -> JsonObject:
    return {
        "apiVersion": "meshproxy.io/v1alpha1",
        "kind": kind,
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }
