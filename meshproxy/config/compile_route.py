"""Compiles envoy.config.route.v3.RouteConfiguration into the runtime route table.

Owns the rules Envoy applies to virtual hosts (domain uniqueness and wildcards), route matches,
and the three route actions (route, redirect, direct_response); a route action's upstream policy
(retries, hash policy, stream duration) is compiled by ``compile_route_policy``, with the virtual
host's retry_policy and buffer limit applying where the route gives none. Cluster names are recorded in the
context's ``cluster_refs``, not checked here: whether a cluster exists is known only to whoever
holds the clusters (the bootstrap compiler; later the xDS client).
Must not depend on the listener or cluster compilers.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Literal

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2

from meshproxy.config.compile_common import (
    Ctx,
    duration,
    enum_name,
    finish,
    header_matcher,
    header_mutations,
    port_in_range,
    regex,
    reject_fields,
    string_match,
    wrapped,
)
from meshproxy.config.compile_filters import filter_configs
from meshproxy.config.compile_route_policy import (
    hash_policy,
    max_stream_duration,
    mirror_policy,
    retry_policy,
)
from meshproxy.config.compile_upgrade import upgrade_configs
from meshproxy.config.fidelity import refuse_unsupported
from meshproxy.config.model import (
    DirectResponse,
    HeaderMatcher,
    QueryParameterMatcher,
    Redirect,
    RegexRewrite,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.config.policy import RetryPolicy
from meshproxy.config.regex import RegexError, compile_regex, parse_rewrite

# Match conditions meshproxy does not evaluate. Ignoring one would make the route match more
# requests than configured, so each is rejected rather than dropped.
_UNEVALUATED_MATCH_FIELDS = ("runtime_fraction", "tls_context", "dynamic_metadata", "filter_state")

# ``grpc: {}``: only gRPC requests, as Envoy's Grpc::Common::hasGrpcContentType decides: the
# content-type is application/grpc, or application/grpc followed by "+" or ";".
_GRPC_CONTENT_TYPE = r"application/grpc([+;].*)?"


@functools.cache
def _grpc_matcher() -> HeaderMatcher:
    """Compiled on first use: RE2 is loaded only by a configuration that has a pattern."""
    pattern = compile_regex(_GRPC_CONTENT_TYPE)
    return HeaderMatcher("content-type", StringMatch("regex", _GRPC_CONTENT_TYPE, pattern=pattern))


_PATH_KINDS: dict[str, Literal["prefix", "path", "regex", "separated_prefix"]] = {
    "prefix": "prefix",
    "path": "path",
    "safe_regex": "regex",
    "path_separated_prefix": "separated_prefix",
}

_RETRY_BUFFER_LIMIT = 64 * 1024  # RouteAction.retry_buffer_limit's default

_REDIRECT_CODES = {
    rc.RedirectAction.MOVED_PERMANENTLY: 301,
    rc.RedirectAction.FOUND: 302,
    rc.RedirectAction.SEE_OTHER: 303,
    rc.RedirectAction.TEMPORARY_REDIRECT: 307,
    rc.RedirectAction.PERMANENT_REDIRECT: 308,
}


def compile_route_configuration(
    msg: route_pb2.RouteConfiguration, path: str, problems: list[str]
) -> RouteConfiguration | None:
    """The runtime RouteConfiguration, or None after appending each problem to ``problems``."""
    return route_configuration(msg, Ctx(path, problems))


def compile_route_configuration_steps(
    msg: route_pb2.RouteConfiguration, path: str, problems: list[str]
) -> Generator[None, None, RouteConfiguration | None]:
    """``compile_route_configuration`` one route per step: the generator yields after each
    route and returns the result, so a caller that must not hold its thread for a whole large
    table (the xDS client, 40-90 us a route) can stop between steps."""
    return route_configuration_steps(msg, Ctx(path, problems))


def route_configuration(msg: route_pb2.RouteConfiguration, ctx: Ctx) -> RouteConfiguration | None:
    return finish(route_configuration_steps(msg, ctx))


def route_configuration_steps(
    msg: route_pb2.RouteConfiguration, ctx: Ctx
) -> Generator[None, None, RouteConfiguration | None]:
    mark = ctx.mark()
    refuse_unsupported(msg, ctx)
    if msg.HasField("vhds"):
        ctx.at("vhds").problem("vhds needs dynamic_resources, not supported yet; list virtual_hosts inline")
    virtual_hosts = []
    for v, c in ctx.each("virtual_hosts", msg.virtual_hosts):
        virtual_hosts.append((yield from _virtual_host_steps(v, c)))
    _check_domains(msg, ctx)
    request_headers = header_mutations(msg, "request", ctx)
    response_headers = header_mutations(msg, "response", ctx)
    configs = filter_configs(msg.typed_per_filter_config, ctx)
    if not ctx.clean_since(mark):
        return None
    return RouteConfiguration(
        msg.name, tuple(v for v in virtual_hosts if v), request_headers, response_headers, configs
    )


def _virtual_host_steps(msg: rc.VirtualHost, ctx: Ctx) -> Generator[None, None, VirtualHost | None]:
    if not msg.name:
        ctx.at("name").problem("is required")
    if not msg.domains:
        ctx.at("domains").problem('needs at least one domain (use "*" to match every host)')
    retry = retry_policy(msg.retry_policy, ctx.at("retry_policy")) if msg.HasField("retry_policy") else None
    buffer_limit = wrapped(msg, "per_request_buffer_limit_bytes", _RETRY_BUFFER_LIMIT)
    routes = []
    for r, c in ctx.each("routes", msg.routes):
        routes.append(route(r, c, retry, buffer_limit))
        yield
    return VirtualHost(
        msg.name,
        tuple(d.lower() for d in msg.domains),
        tuple(r for r in routes if r),
        header_mutations(msg, "request", ctx),
        header_mutations(msg, "response", ctx),
        filter_configs(msg.typed_per_filter_config, ctx),
    )


def _check_domains(msg: route_pb2.RouteConfiguration, ctx: Ctx) -> None:
    """Envoy's rules: a domain appears once across all virtual hosts (so only one may be "*"),
    and a wildcard is a prefix ("*.x", "*-x") or a suffix ("x*"), never both or in the middle."""
    seen: dict[str, int] = {}
    for index, vhost in enumerate(msg.virtual_hosts):
        for domain, dctx in ctx.at("virtual_hosts", index).each("domains", vhost.domains):
            domain = domain.lower()
            if not domain:
                dctx.problem("must not be empty")
            elif not _wildcard_ok(domain):
                dctx.problem(
                    f'"{domain}": a wildcard may only be a prefix ("*.example.com") or a suffix ("example.*")'
                )
            elif domain in seen:
                rule = (
                    'only one virtual host may use the wildcard domain "*"'
                    if domain == "*"
                    else "a domain may appear only once across virtual hosts"
                )
                dctx.problem(f'"{domain}" is already a domain of virtual_hosts[{seen[domain]}]; {rule}')
            else:
                seen[domain] = index


def _wildcard_ok(domain: str) -> bool:
    stars = domain.count("*")
    return stars == 0 or domain == "*" or (stars == 1 and (domain[0] == "*" or domain[-1] == "*"))


# --------------------------------------------------------------------------- routes


def route(
    msg: rc.Route,
    ctx: Ctx,
    vhost_retry: RetryPolicy | None = None,
    vhost_buffer_limit: int = _RETRY_BUFFER_LIMIT,
) -> Route | None:
    """``vhost_retry`` and ``vhost_buffer_limit`` are the virtual host's retry_policy and
    per_request_buffer_limit_bytes: a route's own replace them (Envoy's precedence)."""
    refuse_unsupported(msg, ctx)
    if not msg.HasField("match"):
        ctx.at("match").problem("is required")
        match = None
    else:
        match = route_match(msg.match, ctx.at("match"))
    kind = msg.WhichOneof("action")
    action: RouteAction | Redirect | DirectResponse | None = None
    if kind == "route":
        buffer_limit = wrapped(msg, "per_request_buffer_limit_bytes", vhost_buffer_limit)
        action = route_action(msg.route, ctx.at("route"), vhost_retry, buffer_limit)
    elif kind == "redirect":
        action = redirect(msg.redirect, ctx.at("redirect"))
    elif kind == "direct_response":
        action = direct_response(msg.direct_response, ctx.at("direct_response"))
    elif kind is None:
        ctx.problem("a route needs one of route, redirect or direct_response")
    else:
        ctx.at(kind).problem("is not supported; use route, redirect or direct_response")
    configs = filter_configs(msg.typed_per_filter_config, ctx)
    if match is None or action is None:
        return None
    return Route(
        match,
        action,
        msg.name,
        header_mutations(msg, "request", ctx),
        header_mutations(msg, "response", ctx),
        configs,
    )


def route_match(msg: rc.RouteMatch, ctx: Ctx) -> RouteMatch | None:
    mark = ctx.mark()
    reject_fields(
        msg,
        _UNEVALUATED_MATCH_FIELDS,
        ctx,
        "is not supported; the route would match more requests than configured",
    )
    kind = msg.WhichOneof("path_specifier")
    pattern = None
    if kind == "safe_regex":
        pattern = regex(msg.safe_regex, ctx.at("safe_regex"))
    elif kind == "path_separated_prefix":
        _check_separated_prefix(msg.path_separated_prefix, ctx.at("path_separated_prefix"))
    elif kind is None:
        ctx.problem("a route match needs one of prefix, path, safe_regex or path_separated_prefix")
    elif kind not in _PATH_KINDS:
        ctx.at(kind).problem("is not supported; use prefix, path, safe_regex or path_separated_prefix")
    headers = [header_matcher(h, c) for h, c in ctx.each("headers", msg.headers)]
    if msg.HasField("grpc"):
        headers.append(_grpc_matcher())
    query = [query_parameter_matcher(q, c) for q, c in ctx.each("query_parameters", msg.query_parameters)]
    if kind is None or not ctx.clean_since(mark):
        return None
    return RouteMatch(
        _PATH_KINDS[kind],
        pattern.source if pattern else getattr(msg, kind),
        wrapped(msg, "case_sensitive", True),
        pattern,
        tuple(h for h in headers if h),
        tuple(q for q in query if q),
    )


def _check_separated_prefix(prefix: str, ctx: Ctx) -> None:
    if not prefix.startswith("/"):
        ctx.problem(f'"{prefix}" must start with "/"')
    elif prefix.endswith("/"):
        ctx.problem(f'"{prefix}" must not end with "/" (to match every path, use prefix "/")')
    elif "?" in prefix or "#" in prefix:
        ctx.problem(f'"{prefix}" must not contain "?" or "#"')


def query_parameter_matcher(msg: rc.QueryParameterMatcher, ctx: Ctx) -> QueryParameterMatcher | None:
    if not msg.name:
        ctx.at("name").problem("is required")
        return None
    kind = msg.WhichOneof("query_parameter_match_specifier")
    if kind != "string_match":
        present = msg.present_match if kind == "present_match" else True
        return QueryParameterMatcher(msg.name, None, present)
    match = string_match(
        msg.string_match, "match_pattern", ctx.at("string_match"), ignore_case=msg.string_match.ignore_case
    )
    return None if match is None else QueryParameterMatcher(msg.name, match)


# --------------------------------------------------------------------------- actions


def route_action(
    msg: rc.RouteAction,
    ctx: Ctx,
    vhost_retry: RetryPolicy | None = None,
    buffer_limit: int = _RETRY_BUFFER_LIMIT,
) -> RouteAction | None:
    mark = ctx.mark()
    kind = msg.WhichOneof("cluster_specifier")
    weighted: tuple[WeightedCluster, ...] = ()
    if kind == "cluster":
        if msg.cluster:
            ctx.at("cluster").refer_cluster(msg.cluster)
        else:
            ctx.at("cluster").problem("must not be empty")
    elif kind == "weighted_clusters":
        weighted = _weighted_clusters(msg.weighted_clusters, ctx.at("weighted_clusters"))
    elif kind is None:
        ctx.problem("a route action needs cluster or weighted_clusters")
    else:
        ctx.at(kind).problem("is not supported; name the cluster, or use weighted_clusters")
    host_kind = msg.WhichOneof("host_rewrite_specifier")
    if host_kind not in (None, "host_rewrite_literal"):
        ctx.at(host_kind).problem("is not supported; use host_rewrite_literal")
    rewrite = (
        _regex_rewrite(msg.regex_rewrite, ctx.at("regex_rewrite")) if msg.HasField("regex_rewrite") else None
    )
    if msg.prefix_rewrite and msg.HasField("regex_rewrite"):
        ctx.problem("prefix_rewrite and regex_rewrite cannot both be set")
    timeout = duration(msg, "timeout", ctx, 15.0)
    retry = (
        retry_policy(msg.retry_policy, ctx.at("retry_policy"))
        if msg.HasField("retry_policy")
        else vhost_retry
    )
    hashes = [hash_policy(h, c) for h, c in ctx.each("hash_policy", msg.hash_policy)]
    stream_limit, grpc_max = (
        max_stream_duration(msg.max_stream_duration, ctx.at("max_stream_duration"))
        if msg.HasField("max_stream_duration")
        else (0.0, None)
    )
    upgrades = upgrade_configs(msg.upgrade_configs, ctx, route=True)
    mirrors = [
        mirror_policy(m, c) for m, c in ctx.each("request_mirror_policies", msg.request_mirror_policies)
    ]
    if not ctx.clean_since(mark):
        return None
    return RouteAction(
        cluster=msg.cluster or None,
        weighted_clusters=weighted,
        total_weight=sum(w.weight for w in weighted),
        prefix_rewrite=msg.prefix_rewrite or None,
        regex_rewrite=rewrite,
        host_rewrite_literal=msg.host_rewrite_literal or None,
        timeout=timeout,
        retry_policy=retry,
        hash_policy=tuple(h for h in hashes if h is not None),
        max_stream_duration=stream_limit,
        grpc_timeout_header_max=grpc_max,
        retry_buffer_limit=buffer_limit,
        priority=enum_name(msg, "priority"),
        upgrades=upgrades,
        mirrors=tuple(m for m in mirrors if m is not None),
    )


def _weighted_clusters(msg: rc.WeightedCluster, ctx: Ctx) -> tuple[WeightedCluster, ...]:
    clusters = []
    for entry, c in ctx.each("clusters", msg.clusters):
        if entry.cluster_header:
            c.at("cluster_header").problem("is not supported; name the cluster")
        elif entry.name:
            c.at("name").refer_cluster(entry.name)
        else:
            c.at("name").problem("is required")
        clusters.append(
            WeightedCluster(
                entry.name,
                wrapped(entry, "weight", 0),
                header_mutations(entry, "request", c),
                header_mutations(entry, "response", c),
            )
        )
    check_weights(clusters, ctx, declared_total=wrapped(msg, "total_weight", None))
    return tuple(clusters)


def check_weights(clusters: list[WeightedCluster], ctx: Ctx, *, declared_total: int | None = None) -> None:
    """The weighted_clusters rules shared with tcp_proxy: at least one cluster, a positive sum,
    and, where total_weight is given, a sum equal to it."""
    total = sum(c.weight for c in clusters)
    if not clusters:
        ctx.at("clusters").problem("needs at least one cluster")
    elif total <= 0:
        ctx.problem("the sum of the cluster weights must be greater than 0")
    elif declared_total is not None and declared_total != total:
        ctx.at("total_weight").problem(f"is {declared_total} but the cluster weights sum to {total}")


def _regex_rewrite(msg: regex_pb2.RegexMatchAndSubstitute, ctx: Ctx) -> RegexRewrite | None:
    """Envoy's regex_rewrite: an RE2 pattern and a substitution in RE2's rewrite syntax
    (``\\0`` the whole match, ``\\1``..``\\9`` a group, ``\\\\`` a backslash)."""
    pattern = regex(msg.pattern, ctx.at("pattern"))
    if pattern is None:
        return None
    try:
        return RegexRewrite(pattern, msg.substitution, parse_rewrite(msg.substitution, pattern.groups))
    except RegexError as err:
        ctx.at("substitution").problem(str(err))
        return None


def redirect(msg: rc.RedirectAction, ctx: Ctx) -> Redirect | None:
    mark = ctx.mark()
    scheme = "https" if msg.https_redirect else msg.scheme_redirect.lower() or None
    if msg.port_redirect:
        port_in_range(msg.port_redirect, ctx.at("port_redirect"))
    rewrite = (
        _regex_rewrite(msg.regex_rewrite, ctx.at("regex_rewrite")) if msg.HasField("regex_rewrite") else None
    )
    code = _REDIRECT_CODES.get(msg.response_code)
    if code is None:
        ctx.at("response_code").problem(f"{msg.response_code} is not a RedirectResponseCode")
    if code is None or not ctx.clean_since(mark):
        return None
    return Redirect(
        scheme=scheme,
        host=msg.host_redirect or None,
        port=msg.port_redirect or None,
        path=msg.path_redirect or None,
        prefix_rewrite=msg.prefix_rewrite or None,
        regex_rewrite=rewrite,
        response_code=code,
        strip_query=msg.strip_query,
    )


def direct_response(msg: rc.DirectResponseAction, ctx: Ctx) -> DirectResponse | None:
    mark = ctx.mark()
    if not 200 <= msg.status <= 599:
        ctx.at("status").problem(f"{msg.status} is not a valid status; Envoy requires 200..599")
    body = b""
    source = msg.body.WhichOneof("specifier")
    if source == "inline_string":
        body = msg.body.inline_string.encode()
    elif source == "inline_bytes":
        body = msg.body.inline_bytes
    elif source is not None:
        ctx.at("body").at(source).problem("is not supported; give the body as inline_string or inline_bytes")
    if not ctx.clean_since(mark):
        return None
    return DirectResponse(msg.status, body)
