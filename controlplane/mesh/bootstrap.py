"""The bootstrap of a sidecar that gets everything else from the controlplane over ADS.

Owns that one document's shape (Envoy v3 Bootstrap, as JSON-ready data): the admin on the
pod's loopback (15000), the ``xds`` cluster to the controlplane's TLS port verified against the
CA's trust bundle, with the controlplane's name as SNI, and ADS (HTTP/2) for listeners and
clusters. ``node.cluster`` is the sidecar group that selects its resources
(`controlplane.mesh.translate`). The pods harness and the Kubernetes injector both write it.

Must not depend on: protobuf, grpc, asyncio, files (the caller writes the document).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ADMIN_PORT = 15000


def sidecar_bootstrap(
    node: str,
    group: str,
    controlplane: tuple[str, int],
    trust_file: str,
    sni: str,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The bootstrap of sidecar ``node`` in ``group``: ADS to ``controlplane`` (an IP address, or a
    name resolved by DNS) over TLS, verified against the PEM bundle at ``trust_file``."""
    host, port = controlplane
    endpoint = {"endpoint": {"address": _address(host, port)}}
    tls = {
        "@type": UPSTREAM_TLS,
        "sni": sni,
        "common_tls_context": {"validation_context": {"trusted_ca": {"filename": trust_file}}},
    }
    xds = {
        "name": "xds",
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [endpoint]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    node_doc: dict[str, Any] = {"id": node, "cluster": group}
    if metadata:
        node_doc["metadata"] = dict(metadata)
    return {
        "node": node_doc,
        "admin": {"address": _address("127.0.0.1", ADMIN_PORT)},
        "static_resources": {"clusters": [xds]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
