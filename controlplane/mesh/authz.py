"""A service's allowed callers, and the mesh's hybrid-caller rule, as Envoy RBAC.

Owns how the mesh's authorization is spelled in Envoy's v3 API. The TLS handshake of an inbound
chain authenticates (any identity of the trust domain: ``envoy.py``'s ``downstream_tls``); RBAC
authorizes: ALLOW when the peer's verified SPIFFE ID is one ``service.allow`` admits
(``authenticated.principal_name``, exact or prefix). HTTP and gRPC chains get
``envoy.filters.http.rbac`` before the router (a refused caller gets Envoy's 403 ``RBAC: access
denied``, which its own sidecar relays to the application), opaque TCP chains
``envoy.filters.network.rbac`` before ``tcp_proxy`` (the connection is closed). The mesh's
``hybrid_callers`` adds meshproxy's ``TlsPrincipal``: ``required`` ANDs a post-quantum group into
the policy, ``dry_run`` counts callers that are not on one in shadow rules
(``….rbac.hybrid_shadow_denied``) and refuses nobody, ``any`` says nothing about groups.
Must not depend on: grpc, asyncio, the YAML loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.type.matcher.v3 import string_pb2

from controlplane.mesh.envoy import packed
from controlplane.mesh.model import Mesh, Service
from meshproxy._gen.rbac.v1 import pq_pb2
from meshproxy.tls.policy import PQ_GROUPS

NETWORK_RBAC = "envoy.filters.network.rbac"
HTTP_RBAC = "envoy.filters.http.rbac"
TLS_PRINCIPAL = "meshproxy.rbac.tls_principal"
ALLOWED_CALLERS = "allowed-callers"
HYBRID_CALLERS = "hybrid-callers"
SHADOW_PREFIX = "hybrid_"


@dataclass(frozen=True, slots=True)
class Callers:
    """One service's authorization, in the two filters a chain may need."""

    network: lc.Filter  # before tcp_proxy
    http: hcm.HttpFilter  # first of an HCM's http_filters


def callers(mesh: Mesh, service: Service, stat_prefix: str) -> Callers:
    """``service``'s allowed callers (and, as the mesh says, only those on a post-quantum
    group); ``stat_prefix`` names the network filter's counters (``<stat_prefix>.rbac``), the
    HTTP filter's are the connection manager's (``http.<its stat_prefix>.rbac``)."""
    allowed = [_caller(a.identity, a.prefix) for a in service.allow]
    principal = rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=allowed))
    if mesh.hybrid_callers == "required":
        principal = rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[principal, _hybrid()]))
    rules = _allow(ALLOWED_CALLERS, principal)
    shadow = _allow(HYBRID_CALLERS, _hybrid()) if mesh.hybrid_callers == "dry_run" else None
    network = network_rbac.RBAC(stat_prefix=stat_prefix, rules=rules)
    http = http_rbac.RBAC(rules=rules)
    if shadow is not None:
        for config in (network, http):
            config.shadow_rules.CopyFrom(shadow)
            config.shadow_rules_stat_prefix = SHADOW_PREFIX
    return Callers(
        lc.Filter(name=NETWORK_RBAC, typed_config=packed(network)),
        hcm.HttpFilter(name=HTTP_RBAC, typed_config=packed(http)),
    )


def _allow(name: str, principal: rbac_pb2.Principal) -> rbac_pb2.RBAC:
    policy = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)], principals=[principal])
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies={name: policy})


def _caller(identity: str, prefix: bool) -> rbac_pb2.Principal:
    matcher = string_pb2.StringMatcher(**{"prefix" if prefix else "exact": identity})
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _hybrid() -> rbac_pb2.Principal:
    principal = rbac_pb2.Principal()
    principal.custom.name = TLS_PRINCIPAL
    principal.custom.typed_config.Pack(pq_pb2.TlsPrincipal(groups=sorted(PQ_GROUPS)))
    return principal
