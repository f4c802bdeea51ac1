"""Compiles QUIC configuration: a listener's ``udp_listener_config`` and filter chain, a cluster's HTTP/3.

Owns what makes a listener a QUIC (HTTP/3) listener, Envoy's way: a UDP ``socket_address``, a
``udp_listener_config`` with ``quic_options``, and filter chains whose transport socket is a
``QuicDownstreamTransport`` and whose connection manager has ``codec_type: HTTP3``; and the rule
that these go together (each half without the other is refused, naming the field). A QUIC
listener takes exactly one filter chain: its connections are not matched by destination, SNI or
ALPN (docs/quic.md). A cluster speaks HTTP/3 with a ``QuicUpstreamTransport`` and
``explicit_http_config.http3_protocol_options``, both or neither. What QUIC's TLS cannot do (TLS
1.2, other suites, ``signature_algorithms``, an ML-DSA key) is refused here too. Fields of these
messages meshproxy cannot run are refused by the fidelity table (``fidelity.py``) first.
Must not import aioquic (a configuration without QUIC never loads it) nor the cluster compiler.
"""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from meshproxy.config.compile_common import Ctx, duration, type_url, unpack, wrapped
from meshproxy.config.compile_http2 import http2_options
from meshproxy.config.compile_tls import tls_context
from meshproxy.config.model import Http2Options, QuicOptions, TlsFiles
from meshproxy.tls.config import TlsConfig, TlsVersion

QUIC_DOWNSTREAM = type_url(quic_transport_pb2.QuicDownstreamTransport)
QUIC_UPSTREAM = type_url(quic_transport_pb2.QuicUpstreamTransport)
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM = type_url(hcm.HttpConnectionManager)
QUIC_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_MIN_PACKET = 1200  # RFC 9000 §14: a QUIC path carries datagrams of at least 1200 bytes


def quic_options(msg: listener_pb2.Listener, ctx: Ctx) -> QuicOptions | None:
    """The listener's QUIC settings, or None (a problem) for a UDP listener without quic_options."""
    udp = ctx.at("udp_listener_config")
    if not msg.udp_listener_config.HasField("quic_options"):
        udp.at("quic_options").problem("is required: meshproxy's UDP listeners serve QUIC (HTTP/3) only")
        return None
    quic = msg.udp_listener_config.quic_options
    qctx = udp.at("quic_options")
    if quic.HasField("enabled") and not wrapped(quic.enabled, "default_value", True):
        qctx.at("enabled").at("default_value").problem(
            "a QUIC listener that is not enabled is not supported; remove the listener"
        )
    tctx = qctx.at("quic_protocol_options")
    if quic.quic_protocol_options.HasField("idle_network_timeout"):
        tctx.at("idle_network_timeout").problem("on a listener, use quic_options.idle_timeout")
    options = _transport(quic.quic_protocol_options, tctx, duration(quic, "idle_timeout", qctx, 300.0))
    return dataclasses.replace(
        options, handshake_timeout=duration(quic, "crypto_handshake_timeout", qctx, 20.0)
    )


def quic_cluster(
    msg: cluster_pb2.Cluster, quic: bool, ctx: Ctx
) -> tuple[QuicOptions | None, Http2Options | None, bool]:
    """A cluster's (HTTP/3 settings, HTTP/2 settings, TCP fallback): explicit_http_config's
    http3_protocol_options (HTTP/3 only), or auto_config's (HTTP/3, then HTTP/2 over TCP for a host
    whose QUIC is blocked). They go with a QuicUpstreamTransport (``quic``; the cluster compiler
    refuses them without one). (None, None, False) for a TCP cluster."""
    if not quic:
        return None, None, False
    octx = ctx.at("typed_extension_protocol_options", HTTP_OPTIONS)
    packed = msg.typed_extension_protocol_options.get(HTTP_OPTIONS)
    options = hpo.HttpProtocolOptions()
    kind = (
        options.WhichOneof("upstream_protocol_options")
        if packed is not None and packed.Unpack(options)
        else None
    )
    if kind == "auto_config" and options.auto_config.HasField("http3_protocol_options"):
        auto, actx = options.auto_config, octx.at("auto_config")
        h3ctx = actx.at("http3_protocol_options").at("quic_protocol_options")
        transport = auto.http3_protocol_options.quic_protocol_options
        h2 = http2_options(auto, "http2_protocol_options", actx)
        return (
            _transport(transport, h3ctx, duration(transport, "idle_network_timeout", h3ctx, 300.0)),
            h2,
            True,
        )
    if kind != "explicit_http_config" or not options.explicit_http_config.HasField("http3_protocol_options"):
        octx.at("explicit_http_config").at("http3_protocol_options").problem(
            "is required with a QuicUpstreamTransport (a QUIC cluster speaks HTTP/3), "
            "or auto_config.http3_protocol_options for HTTP/3 with HTTP/2 over TCP as fallback"
        )
        return None, None, False
    h3ctx = octx.at("explicit_http_config").at("http3_protocol_options").at("quic_protocol_options")
    transport = options.explicit_http_config.http3_protocol_options.quic_protocol_options
    options3 = _transport(transport, h3ctx, duration(transport, "idle_network_timeout", h3ctx, 300.0))
    return options3, Http2Options(max_concurrent_streams=options3.max_concurrent_streams), False


def _transport(transport: protocol_pb2.QuicProtocolOptions, ctx: Ctx, idle_timeout: float) -> QuicOptions:
    streams = wrapped(transport, "max_concurrent_streams", 100)
    if not 1 <= streams <= 2**31:
        ctx.at("max_concurrent_streams").problem(f"{streams} is out of range; use 1..2147483648")
    packet = transport.max_packet_length.value or 1350
    if not _MIN_PACKET <= packet <= 65527:
        ctx.at("max_packet_length").problem(f"{packet} is out of range; use {_MIN_PACKET}..65527")
    return QuicOptions(
        idle_timeout=idle_timeout,
        max_concurrent_streams=streams,
        initial_stream_window_size=wrapped(transport, "initial_stream_window_size", 16 * 1024 * 1024),
        initial_connection_window_size=wrapped(transport, "initial_connection_window_size", 24 * 1024 * 1024),
        max_packet_length=packet,
    )


def quic_transport(msg: base_pb2.TransportSocket, ctx: Ctx) -> tuple[TlsConfig | None, TlsFiles | None]:
    """A filter chain's ``QuicDownstreamTransport`` or a cluster's ``QuicUpstreamTransport``: its TLS
    context, compiled as on TCP, and refused where it asks for what QUIC's TLS cannot do."""
    inner: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext
    if msg.typed_config.type_url == QUIC_UPSTREAM:
        name = "upstream_tls_context"
        inner = unpack(msg.typed_config, quic_transport_pb2.QuicUpstreamTransport).upstream_tls_context
    else:
        name = "downstream_tls_context"
        inner = unpack(msg.typed_config, quic_transport_pb2.QuicDownstreamTransport).downstream_tls_context
    tctx = ctx.at("typed_config").at(name)
    if not inner.ByteSize():
        tctx.problem("is required: QUIC always runs TLS 1.3")
        return None, None
    tls, files = tls_context(inner, tctx)
    if tls is not None and not _quic_can(tls, tctx.at("common_tls_context")):
        return None, None
    return tls, files


def _quic_can(tls: TlsConfig, ctx: Ctx) -> bool:
    """QUIC is TLS 1.3 only (RFC 9001 §4.2) and aioquic offers fixed suites and signature schemes."""
    mark = ctx.mark()
    params = ctx.at("tls_params")
    if tls.max_version < TlsVersion.TLSv1_3:
        params.at("tls_maximum_protocol_version").problem("QUIC is TLS 1.3 only (RFC 9001 §4.2)")
    bad = [name for name in tls.cipher_suites if name not in QUIC_SUITES]
    if bad:
        params.at("cipher_suites").problem(
            f"{', '.join(bad)} not available over QUIC; use {', '.join(QUIC_SUITES)}"
        )
    if tls.signature_algorithms:
        params.at("signature_algorithms").problem(
            "is not supported over QUIC (aioquic signs with a fixed list)"
        )
    if tls.private_key and not _signs_quic(tls.private_key):
        ctx.at("tls_certificates", 0).at("private_key").problem(
            "an ML-DSA key cannot sign a QUIC handshake (aioquic signs with ECDSA, EdDSA or RSA); "
            "use an ECDSA P-256 certificate for QUIC"
        )
    return ctx.clean_since(mark)


def _signs_quic(key_pem: bytes) -> bool:
    # cryptography is loaded only by a configuration with a QUIC listener (docs/memory.md).
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    return isinstance(
        key,
        ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | rsa.RSAPrivateKey,
    )


def check_chains(msg: listener_pb2.Listener, quic: bool, ctx: Ctx) -> None:
    """QUIC transport sockets and the HTTP3 codec on a QUIC listener's one chain, and nowhere else."""
    chains = [(c, ctx.at("filter_chains", i)) for i, c in enumerate(msg.filter_chains)]
    if msg.HasField("default_filter_chain"):
        chains.append((msg.default_filter_chain, ctx.at("default_filter_chain")))
    if quic and len(chains) != 1:
        ctx.at("filter_chains").problem(
            "a QUIC listener takes exactly one filter chain (filter_chains or default_filter_chain), "
            f"not {len(chains)}"
        )
    for chain, c in chains:
        is_quic = chain.transport_socket.typed_config.type_url == QUIC_DOWNSTREAM
        if quic and not is_quic:
            c.at("transport_socket").problem("a QUIC listener's filter chain needs a QuicDownstreamTransport")
        elif is_quic and not quic:
            c.at("transport_socket").problem(
                "QuicDownstreamTransport needs a UDP listener with udp_listener_config.quic_options"
            )
        for i, entry in enumerate(chain.filters):
            if entry.typed_config.type_url == _HCM:
                manager = unpack(entry.typed_config, hcm.HttpConnectionManager)
                if manager.http3_protocol_options.HasField("quic_protocol_options"):
                    c.at("filters", i).at("typed_config").at("http3_protocol_options").at(
                        "quic_protocol_options"
                    ).problem("a QUIC listener's transport settings are its udp_listener_config.quic_options")
                http3 = manager.codec_type == hcm.HttpConnectionManager.HTTP3
                if quic != http3:
                    c.at("filters", i).at("typed_config").at("codec_type").problem(
                        "a QUIC listener's connection manager needs codec_type HTTP3"
                        if quic
                        else "HTTP3 needs a QUIC listener (udp_listener_config.quic_options)"
                    )
            elif quic:
                c.at("filters", i).problem(
                    "a QUIC listener runs only envoy.filters.network.http_connection_manager"
                )
