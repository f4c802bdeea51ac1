"""Envoy's TLS transport sockets compiled into ``TlsConfig``.

Owns the reading of ``envoy.transport_sockets.tls`` (``DownstreamTlsContext`` on a filter chain,
``UpstreamTlsContext`` on a cluster): versions, cipher suites, signature algorithms,
``ecdh_curves`` (which decide the post-quantum policy through ``tls.policy``), the certificate
chain and key, the trusted CA, URI SAN matchers (SPIFFE identities), client-certificate
requirement, ALPN and SNI. Data sources are read here, once, so a missing file is a problem
with its field path rather than a failed handshake later. ``raw_buffer`` means plaintext.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from meshproxy.config.compile_common import Ctx, reject_fields, string_match, type_url, unpack, wrapped
from meshproxy.config.model import StringMatch, TlsFiles
from meshproxy.errors import ConfigError
from meshproxy.router.match import compile_string_match
from meshproxy.tls.config import SanMatcher, SanType, TlsConfig, TlsVersion
from meshproxy.tls.policy import from_ecdh_curves

_DOWNSTREAM = type_url(tls_pb2.DownstreamTlsContext)
_UPSTREAM = type_url(tls_pb2.UpstreamTlsContext)
_RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
_RAW_NAMES = ("envoy.transport_sockets.raw_buffer", "raw_buffer")

_VERSIONS = {
    common_pb2.TlsParameters.TLSv1_2: TlsVersion.TLSv1_2,
    common_pb2.TlsParameters.TLSv1_3: TlsVersion.TLSv1_3,
}
_SDS_LATER = (
    "secrets over SDS (sds_config) arrive with the xDS issue; name a static_resources.secrets entry, "
    "or give the certificate inline or by filename"
)
_UNSUPPORTED_COMMON = (
    "tls_certificate_provider_instance",
    "custom_tls_certificate_selector",
    "tls_certificate_certificate_provider",
    "tls_certificate_certificate_provider_instance",
    "validation_context_certificate_provider",
    "validation_context_certificate_provider_instance",
    "custom_handshaker",
)
_UNSUPPORTED_VALIDATION = (
    "ca_certificate_provider_instance",
    "system_root_certs",
    "watched_directory",
    "verify_certificate_spki",
    "verify_certificate_hash",
    "match_subject_alt_names",
    "crl",
    "custom_validator_config",
)


def transport_tls(
    msg: base_pb2.TransportSocket, ctx: Ctx, *, server_side: bool
) -> tuple[TlsConfig | None, TlsFiles | None]:
    """(config, files) for a filter chain's or cluster's ``transport_socket``; (None, None) for
    plaintext or after a problem. ``files`` is set when the chain, key and trusted CA all come
    from files, which are then watched for rotation."""
    url = msg.typed_config.type_url
    if url == _RAW_BUFFER or (not url and msg.name in _RAW_NAMES):
        return None, None
    want = _DOWNSTREAM if server_side else _UPSTREAM
    if url != want:
        kind = "a DownstreamTlsContext" if server_side else "an UpstreamTlsContext"
        ctx.at("typed_config").problem(f'"{url or msg.name}" is not supported here; use {kind} or raw_buffer')
        return None, None
    if server_side:
        return tls_context(unpack(msg.typed_config, tls_pb2.DownstreamTlsContext), ctx.at("typed_config"))
    return tls_context(unpack(msg.typed_config, tls_pb2.UpstreamTlsContext), ctx.at("typed_config"))


def tls_context(
    msg: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext, ctx: Ctx
) -> tuple[TlsConfig | None, TlsFiles | None]:
    """A DownstreamTlsContext or UpstreamTlsContext, as ``transport_tls`` returns it (also what
    QUIC's transport sockets wrap: ``compile_quic``)."""
    mark = ctx.mark()
    if isinstance(msg, tls_pb2.DownstreamTlsContext):
        server_side, require_client, sni = True, wrapped(msg, "require_client_certificate", False), ""
    else:
        server_side, require_client, sni = False, False, msg.sni
    compiled = _common(msg.common_tls_context, ctx.at("common_tls_context"), server_side, require_client, sni)
    if compiled is None or not ctx.clean_since(mark):
        return None, None
    return compiled


def _files(
    cert: common_pb2.TlsCertificate, validation: common_pb2.CertificateValidationContext | None
) -> TlsFiles | None:
    """The files the chain, key and trusted CA were read from, when all three are files (given
    inline in the context or in the ``static_resources.secrets`` entries it names)."""
    if validation is None:
        return None
    sources = (cert.certificate_chain, cert.private_key, validation.trusted_ca)
    if not all(s.WhichOneof("specifier") == "filename" for s in sources):
        return None
    return TlsFiles(*(s.filename for s in sources))


def _common(
    msg: tls_pb2.CommonTlsContext, ctx: Ctx, server_side: bool, require_client: bool, sni: str
) -> tuple[TlsConfig, TlsFiles | None] | None:
    reject_fields(msg, _UNSUPPORTED_COMMON, ctx, "is not supported")
    params = msg.tls_params
    pctx = ctx.at("tls_params")
    min_v = _version(params, "tls_minimum_protocol_version", pctx, TlsVersion.TLSv1_2)
    max_v = _version(params, "tls_maximum_protocol_version", pctx, TlsVersion.TLSv1_3)
    try:
        policy = from_ecdh_curves(list(params.ecdh_curves), field=f"{pctx.path}.ecdh_curves")
    except ConfigError as exc:
        ctx.problems.extend(exc.problems)
        return None
    chain = key = b""
    certificates = list(ctx.each("tls_certificates", msg.tls_certificates))
    for ref, rctx in ctx.each("tls_certificate_sds_secret_configs", msg.tls_certificate_sds_secret_configs):
        secret = _static_secret(ref, rctx, "tls_certificate")
        if secret is not None:
            certificates.append((secret.tls_certificate, rctx.at("(secret)").at("tls_certificate")))
    if len(certificates) > 1:
        ctx.at("tls_certificates").problem("one certificate is supported (RSA/ECDSA selection is not)")
    chosen: common_pb2.TlsCertificate | None = None
    for cert, cctx in certificates[:1]:
        chosen = cert
        reject_fields(
            cert,
            ("pkcs12", "watched_directory", "private_key_provider", "password"),
            cctx,
            "is not supported",
        )
        chain = _data(cert.certificate_chain, cctx.at("certificate_chain"))
        key = _data(cert.private_key, cctx.at("private_key"))
    trusted: bytes | None = None
    sans: list[SanMatcher] = []
    validation: tuple[common_pb2.CertificateValidationContext, Ctx] | None = None
    if msg.HasField("validation_context"):
        validation = msg.validation_context, ctx.at("validation_context")
    elif msg.HasField("validation_context_sds_secret_config"):
        rctx = ctx.at("validation_context_sds_secret_config")
        secret = _static_secret(msg.validation_context_sds_secret_config, rctx, "validation_context")
        if secret is not None:
            validation = secret.validation_context, rctx.at("(secret)").at("validation_context")
    elif msg.HasField("combined_validation_context"):
        validation = _combined_validation(
            msg.combined_validation_context, ctx.at("combined_validation_context")
        )
    if validation is not None:
        vmsg, vctx = validation
        reject_fields(vmsg, _UNSUPPORTED_VALIDATION, vctx, "is not supported")
        if vmsg.HasField("trusted_ca"):
            trusted = _data(vmsg.trusted_ca, vctx.at("trusted_ca"))
        for san, sctx in vctx.each("match_typed_subject_alt_names", vmsg.match_typed_subject_alt_names):
            matcher = san_matcher(san, sctx)
            if matcher is not None:
                sans.append(matcher)
    try:
        cfg = TlsConfig(
            server_side=server_side,
            certificate_chain=chain,
            private_key=key,
            trusted_ca=trusted,
            match_sans=tuple(sans),
            require_client_certificate=require_client,
            min_version=min_v,
            max_version=max_v,
            pq_policy=policy,
            cipher_suites=tuple(params.cipher_suites),
            signature_algorithms=tuple(params.signature_algorithms),
            alpn=tuple(msg.alpn_protocols),
            sni=sni,
        )
    except ConfigError as exc:
        owner = ctx.path.rsplit(".common_tls_context", 1)[0]  # TlsConfig names fields from there
        ctx.problems.extend(f"{owner}.{p}" for p in exc.problems)
        return None
    files = _files(chosen, validation[0] if validation else None) if chosen is not None else None
    return cfg, files


def _combined_validation(
    msg: common_pb2.CommonTlsContext.CombinedCertificateValidationContext, ctx: Ctx
) -> tuple[common_pb2.CertificateValidationContext, Ctx] | None:
    """Istio's form: the static secret's validation context merged over the default one, as
    Envoy merges them (protobuf MergeFrom: the secret's singular fields win, lists add up)."""
    reject_fields(
        msg,
        ("validation_context_certificate_provider", "validation_context_certificate_provider_instance"),
        ctx,
        "is not supported",
    )
    rctx = ctx.at("validation_context_sds_secret_config")
    secret = _static_secret(msg.validation_context_sds_secret_config, rctx, "validation_context")
    if secret is None:
        return None
    merged = common_pb2.CertificateValidationContext()
    merged.CopyFrom(msg.default_validation_context)
    merged.MergeFrom(secret.validation_context)
    return merged, ctx.at("(merged)")


def _static_secret(ref: Any, ctx: Ctx, kind: str) -> Any:
    """The ``static_resources.secrets`` entry an SDS secret config names (no ``sds_config``)."""
    if ref.HasField("sds_config"):
        ctx.at("sds_config").problem(_SDS_LATER)
        return None
    secret = ctx.secrets.get(ref.name)
    if secret is None:
        known = ", ".join(sorted(ctx.secrets)) or "none"
        ctx.at("name").problem(f'no static secret "{ref.name}" (static_resources.secrets: {known})')
        return None
    if secret.WhichOneof("type") != kind:
        ctx.at("name").problem(f'secret "{ref.name}" holds a {secret.WhichOneof("type")}, not a {kind}')
        return None
    return secret


def _version(params: common_pb2.TlsParameters, name: str, ctx: Ctx, default: TlsVersion) -> TlsVersion:
    value = getattr(params, name)
    if value == common_pb2.TlsParameters.TLS_AUTO:
        return default
    version = _VERSIONS.get(value)
    if version is None:
        ctx.at(name).problem("TLS 1.0 and 1.1 are not supported; use TLSv1_2 or TLSv1_3")
        return default
    return version


def _data(msg: base_pb2.DataSource, ctx: Ctx) -> bytes:
    kind = msg.WhichOneof("specifier")
    if kind == "filename":
        try:
            return Path(msg.filename).read_bytes()
        except OSError as exc:
            ctx.at("filename").problem(f"cannot read {msg.filename}: {exc.strerror}")
            return b""
        except ValueError:  # found by the xds fuzzer: a NUL in the name escaped as an exception
            ctx.at("filename").problem(f"cannot read {msg.filename!r}: the name holds a NUL byte")
            return b""
    if kind == "inline_bytes":
        return bytes(msg.inline_bytes)
    if kind == "inline_string":
        return msg.inline_string.encode()
    ctx.problem("needs filename, inline_bytes or inline_string")
    return b""


_SAN_TYPES: dict[int, SanType] = {
    common_pb2.SubjectAltNameMatcher.URI: "URI",
    common_pb2.SubjectAltNameMatcher.DNS: "DNS",
    common_pb2.SubjectAltNameMatcher.EMAIL: "EMAIL",
    common_pb2.SubjectAltNameMatcher.IP_ADDRESS: "IP_ADDRESS",
}


def san_matcher(msg: common_pb2.SubjectAltNameMatcher, ctx: Ctx) -> SanMatcher | None:
    """One SubjectAltNameMatcher: a StringMatcher over the certificate's SANs of one type."""
    san_type = _SAN_TYPES.get(msg.san_type)
    if san_type is None:
        kind = common_pb2.SubjectAltNameMatcher.SanType.Name(msg.san_type)
        ctx.at("san_type").problem(f"{kind} is not supported; use URI, DNS, EMAIL or IP_ADDRESS")
        return None
    if msg.oid:
        ctx.at("oid").problem("is only for san_type OTHER_NAME, which is not supported")
        return None
    match = string_match(msg.matcher, "match_pattern", ctx.at("matcher"), ignore_case=msg.matcher.ignore_case)
    if match is None:
        return None
    return build_san_matcher(san_type, match)


def build_san_matcher(san_type: SanType, match: StringMatch) -> SanMatcher:
    if san_type == "DNS" and match.kind == "exact":
        test = _dns_name_match(match.value.encode().lower())
    else:
        test = compile_string_match(match)
    return SanMatcher(san_type, f"{match.kind} {match.value}", test, match)


def _dns_name_match(want: bytes) -> Callable[[bytes], bool]:
    """Envoy's dnsNameMatch, case-insensitive: the SAN is ``want``, or it is ``*.`` and a suffix
    that ``want`` has after exactly one label (``*.example.com`` accepts ``a.example.com``)."""

    def test(san: bytes) -> bool:
        san = san.lower()
        if san == want:
            return True
        first = want.find(b".")
        return san.startswith(b"*.") and first > 0 and want[first:] == san[1:]

    return test
