"""Compiles Envoy's RBAC (``envoy.config.rbac.v3.RBAC``) and the two RBAC filters into
``meshproxy.rbac.model``.

Owns the rules of the proto: which permission and principal kinds meshproxy evaluates (the rest
are refused with their path), the required fields Envoy's validation asks for, meshproxy's
``TlsPrincipal`` extension behind ``Principal.custom`` (its groups and signature schemes must
be names a handshake can report), and the stat namespaces of the HTTP and network filters
(``http.<hcm>.rbac.<rules_stat_prefix>``, ``<stat_prefix>.rbac.<shadow_rules_stat_prefix>``).
Must not depend on the listener, route or cluster compilers (they call it), nor on asyncio.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

from envoy.config.core.v3.address_pb2 import CidrRange
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from google.protobuf.any_pb2 import Any as AnyProto

from meshproxy._gen.rbac.v1 import pq_pb2
from meshproxy.config.compile_common import Ctx, enum_name, header_matcher, string_match, type_url, unpack
from meshproxy.rbac.model import (
    AllOf,
    Always,
    AnyOf,
    Authenticated,
    Cidr,
    Header,
    Node,
    Not,
    Policy,
    PortRange,
    RbacFilter,
    Rules,
    ServerName,
    TlsPrincipal,
    UrlPath,
)
from meshproxy.tls.policy import CLASSICAL_GROUPS, PQ_GROUPS, canonical_group
from meshproxy.tls.schemes import SIGNATURE_SCHEMES

HTTP_RBAC_NAME = "envoy.filters.http.rbac"
HTTP_RBAC_URL = type_url(http_rbac.RBAC)
HTTP_RBAC_PER_ROUTE_URL = type_url(http_rbac.RBACPerRoute)
NETWORK_RBAC_URL = type_url(network_rbac.RBAC)
TLS_PRINCIPAL_URL = type_url(pq_pb2.TlsPrincipal)

_ACTIONS = ("ALLOW", "DENY", "LOG")
_NOT_RUN = {
    "metadata": "metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
    "sourced_metadata": "metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
    "filter_state": "filter state matchers are not supported (meshproxy keeps no filter state)",
    "matcher": "matcher extensions are not supported",
    "uri_template": "uri_template is not supported; use url_path with safe_regex",
}


def http_filter(msg: http_rbac.RBAC, ctx: Ctx) -> RbacFilter | None:
    """``envoy.filters.http.rbac``. Its stat namespaces are relative to the connection
    manager's, ``http.<stat_prefix>.``, which the filter's runtime adds."""
    mark = ctx.mark()
    _no_matchers(msg, ctx)
    if msg.track_per_rule_stats:
        ctx.at("track_per_rule_stats").problem("is not supported; meshproxy counts per filter")
    compiled = _filter(msg, "rbac." + msg.rules_stat_prefix, "rbac." + msg.shadow_rules_stat_prefix, ctx)
    return compiled if ctx.clean_since(mark) else None


def http_per_route(msg: http_rbac.RBACPerRoute, ctx: Ctx) -> RbacFilter | None:
    """``RBACPerRoute``: its ``rbac`` replaces the filter's rules for the route (the counters
    stay the filter's, as in Envoy); without one the filter is off for the route (Envoy's
    rule), which is an RbacFilter with no rules."""
    if not msg.HasField("rbac"):
        return RbacFilter(None, None, "", "")
    return http_filter(msg.rbac, ctx.at("rbac"))


def network_filter(msg: network_rbac.RBAC, ctx: Ctx) -> RbacFilter | None:
    """``envoy.filters.network.rbac``: decided once per connection."""
    mark = ctx.mark()
    _no_matchers(msg, ctx)
    if not msg.stat_prefix:
        ctx.at("stat_prefix").problem("is required")
    if msg.enforcement_type != network_rbac.RBAC.ONE_TIME_ON_FIRST_BYTE:
        ctx.at("enforcement_type").problem(
            "CONTINUOUS is not supported: meshproxy decides once per connection (ONE_TIME_ON_FIRST_BYTE)"
        )
    if msg.HasField("delay_deny"):
        ctx.at("delay_deny").problem("is not supported; a denied connection is closed at once")
    namespace = f"{msg.stat_prefix}.rbac."
    compiled = _filter(msg, namespace, namespace + msg.shadow_rules_stat_prefix, ctx)
    return compiled if ctx.clean_since(mark) else None


def _no_matchers(msg: http_rbac.RBAC | network_rbac.RBAC, ctx: Ctx) -> None:
    for name in ("matcher", "shadow_matcher"):
        if msg.HasField(name):
            ctx.at(name).problem(f"is not supported; use {name.replace('matcher', 'rules')}")


def _filter(
    msg: http_rbac.RBAC | network_rbac.RBAC, stat_prefix: str, shadow_prefix: str, ctx: Ctx
) -> RbacFilter | None:
    mark = ctx.mark()
    rules = rules_of(msg.rules, ctx.at("rules")) if msg.HasField("rules") else None
    shadow = rules_of(msg.shadow_rules, ctx.at("shadow_rules")) if msg.HasField("shadow_rules") else None
    if not ctx.clean_since(mark):
        return None
    return RbacFilter(rules, shadow, stat_prefix.rstrip("."), shadow_prefix.rstrip("."))


def rules_of(msg: rbac_pb2.RBAC, ctx: Ctx) -> Rules | None:
    """``envoy.config.rbac.v3.RBAC``."""
    mark = ctx.mark()
    action = enum_name(msg, "action")
    if action not in _ACTIONS:
        ctx.at("action").problem(f"{action} is not supported; use ALLOW, DENY or LOG")
    if msg.HasField("audit_logging_options"):
        ctx.at("audit_logging_options").problem("is not supported; RBAC decisions are in the access log")
    policies = []
    for name in sorted(msg.policies):
        policy = _policy(name, msg.policies[name], ctx.at("policies", name))
        if policy is not None:
            policies.append(policy)
    if not ctx.clean_since(mark):
        return None
    return Rules(action, tuple(policies))  # type: ignore[arg-type]  # checked against _ACTIONS


def _policy(name: str, msg: rbac_pb2.Policy, ctx: Ctx) -> Policy | None:
    mark = ctx.mark()
    for field in ("condition", "checked_condition", "cel_config"):
        if msg.HasField(field):
            ctx.at(field).problem("is not supported: meshproxy does not evaluate CEL expressions")
    if not msg.permissions:
        ctx.at("permissions").problem("needs at least one permission (use any: true for every request)")
    if not msg.principals:
        ctx.at("principals").problem("needs at least one principal (use any: true for every caller)")
    permissions = [permission(p, c) for p, c in ctx.each("permissions", msg.permissions)]
    principals = [principal(p, c) for p, c in ctx.each("principals", msg.principals)]
    if not ctx.clean_since(mark):
        return None
    return Policy(name, tuple(p for p in permissions if p), tuple(p for p in principals if p))


def permission(msg: rbac_pb2.Permission, ctx: Ctx) -> Node | None:
    kind = msg.WhichOneof("rule")
    if kind is None:
        ctx.problem("a permission needs one rule (and_rules, or_rules, not_rule, any, header, url_path, ...)")
        return None
    here = ctx.at(kind)
    if kind in ("and_rules", "or_rules"):
        rules = [permission(p, c) for p, c in here.each("rules", getattr(msg, kind).rules)]
        return _set(kind == "and_rules", rules)
    if kind == "not_rule":
        inner = permission(msg.not_rule, here)
        return None if inner is None else Not(inner)
    if kind == "destination_port":
        return _port_range(msg.destination_port, msg.destination_port + 1, here)
    if kind == "destination_port_range":
        return _port_range(msg.destination_port_range.start, msg.destination_port_range.end, here)
    if kind == "destination_ip":
        return _cidr("destination", msg.destination_ip, here)
    if kind == "requested_server_name":
        match = string_match(
            msg.requested_server_name,
            "match_pattern",
            here,
            ignore_case=msg.requested_server_name.ignore_case,
        )
        return None if match is None else ServerName(match)
    return _shared(msg, kind, here)


def principal(msg: rbac_pb2.Principal, ctx: Ctx) -> Node | None:
    kind = msg.WhichOneof("identifier")
    if kind is None:
        ctx.problem("a principal needs one identifier (and_ids, or_ids, not_id, any, authenticated, ...)")
        return None
    here = ctx.at(kind)
    if kind in ("and_ids", "or_ids"):
        ids = [principal(p, c) for p, c in here.each("ids", getattr(msg, kind).ids)]
        return _set(kind == "and_ids", ids)
    if kind == "not_id":
        inner = principal(msg.not_id, here)
        return None if inner is None else Not(inner)
    if kind == "authenticated":
        if not msg.authenticated.HasField("principal_name"):
            return Authenticated(None)
        name = msg.authenticated.principal_name
        match = string_match(name, "match_pattern", here.at("principal_name"), ignore_case=name.ignore_case)
        return None if match is None else Authenticated(match)
    if kind in ("source_ip", "direct_remote_ip", "remote_ip"):
        return _cidr("remote" if kind == "remote_ip" else "direct_remote", getattr(msg, kind), here)
    if kind == "custom":
        return _custom(msg.custom.name, msg.custom.typed_config, here)
    return _shared(msg, kind, here)


def _shared(msg: rbac_pb2.Permission | rbac_pb2.Principal, kind: str, ctx: Ctx) -> Node | None:
    """The kinds permissions and principals both have: any, header, url_path, and the refused."""
    if kind == "any":
        if not msg.any:
            ctx.problem("must be true (any: false matches nothing; leave the rule out instead)")
            return None
        return Always()
    if kind == "header":
        matcher = header_matcher(msg.header, ctx)
        return None if matcher is None else Header(matcher)
    if kind == "url_path":
        if msg.url_path.WhichOneof("rule") != "path":
            ctx.problem("needs path (a StringMatcher)")
            return None
        path = msg.url_path.path
        match = string_match(path, "match_pattern", ctx.at("path"), ignore_case=path.ignore_case)
        return None if match is None else UrlPath(match)
    ctx.problem(f"is not supported: {_NOT_RUN.get(kind, 'meshproxy does not evaluate it')}")
    return None


def _set(every: bool, children: list[Node | None]) -> Node | None:
    if any(child is None for child in children):
        return None
    kept = tuple(c for c in children if c is not None)
    return AllOf(kept) if every else AnyOf(kept)


def _port_range(start: int, end: int, ctx: Ctx) -> Node | None:
    if not 0 <= start < end <= 65536:
        ctx.problem(f"[{start}, {end}) is not a port range; ports are 0..65535 and start < end")
        return None
    return PortRange(start, end)


def _cidr(address: str, msg: CidrRange, ctx: Ctx) -> Node | None:
    length = msg.prefix_len.value if msg.HasField("prefix_len") else None
    text = msg.address_prefix if length is None else f"{msg.address_prefix}/{length}"
    try:
        network: IPv4Network | IPv6Network = ip_network(text, strict=False)
    except ValueError:
        ctx.problem(f'"{text}" is not an IP network')
        return None
    return Cidr(address, network)  # type: ignore[arg-type]  # one of Address's names


def _custom(name: str, typed_config: AnyProto, ctx: Ctx) -> Node | None:
    """meshproxy.rbac.v1.TlsPrincipal; any other custom principal is refused."""
    if typed_config.type_url != TLS_PRINCIPAL_URL:
        ctx.at("typed_config").problem(
            f'custom principal "{name}" ({typed_config.type_url or "no typed_config"}) is not supported; '
            f"meshproxy's one custom principal is {TLS_PRINCIPAL_URL.rsplit('/', 1)[-1]}"
        )
        return None
    msg = unpack(typed_config, pq_pb2.TlsPrincipal)
    here = ctx.at("typed_config")
    mark = ctx.mark()
    known_groups = PQ_GROUPS | CLASSICAL_GROUPS
    groups = [canonical_group(g) for g in msg.groups]
    for group, c in here.each("groups", groups):
        if group not in known_groups:
            c.problem(f'"{group}" is not a TLS group; use one of {", ".join(sorted(known_groups))}')
    for scheme, c in here.each("signature_algorithms", msg.signature_algorithms):
        if scheme not in SIGNATURE_SCHEMES:
            c.problem(
                f'"{scheme}" is not a signature scheme; use one of {", ".join(sorted(SIGNATURE_SCHEMES))}'
            )
    if not ctx.clean_since(mark):
        return None
    return TlsPrincipal(frozenset(groups), frozenset(msg.signature_algorithms))
