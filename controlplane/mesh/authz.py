"""A service's allowed callers, and the mesh's hybrid-caller rule, as Envoy RBAC.

Owns how the mesh's authorization is spelled in Envoy's v3 API: an
``envoy.filters.network.rbac`` before the terminal filter of each mutual-TLS inbound chain.
The TLS handshake authenticates (any identity of the trust domain: ``envoy.py``'s
``downstream_tls``); this filter authorizes: ALLOW when the peer's verified SPIFFE ID is one
``service.allow`` admits (``authenticated.principal_name``, exact or prefix). The mesh's
``hybrid_callers`` adds meshproxy's ``TlsPrincipal``: ``required`` ANDs a post-quantum group
into the policy, ``dry_run`` counts callers that are not on one in shadow rules
(``<prefix>.rbac.hybrid_shadow_denied``) and refuses nobody, ``any`` says nothing about groups.
Must not depend on: grpc, asyncio, the YAML loader.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from controlplane.mesh.model import Mesh, Service
from meshproxy._gen.rbac.v1 import pq_pb2
from meshproxy.tls.policy import PQ_GROUPS

NETWORK_RBAC = "envoy.filters.network.rbac"
TLS_PRINCIPAL = "meshproxy.rbac.tls_principal"
ALLOWED_CALLERS = "allowed-callers"
HYBRID_CALLERS = "hybrid-callers"
SHADOW_PREFIX = "hybrid_"


def callers_filter(mesh: Mesh, service: Service, stat_prefix: str) -> lc.Filter:
    """The network RBAC filter that admits ``service``'s allowed callers (and, as the mesh
    says, only those on a post-quantum group)."""
    allowed = [_caller(a.identity, a.prefix) for a in service.allow]
    callers = rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=allowed))
    if mesh.hybrid_callers == "required":
        callers = rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[callers, _hybrid()]))
    config = network_rbac.RBAC(stat_prefix=stat_prefix, rules=_allow(ALLOWED_CALLERS, callers))
    if mesh.hybrid_callers == "dry_run":
        config.shadow_rules.CopyFrom(_allow(HYBRID_CALLERS, _hybrid()))
        config.shadow_rules_stat_prefix = SHADOW_PREFIX
    typed = any_pb2.Any()
    typed.Pack(config)
    return lc.Filter(name=NETWORK_RBAC, typed_config=typed)


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
