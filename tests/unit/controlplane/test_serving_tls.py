"""The controlplane's serving certificate: its SANs, its renewal, and grpc rotating it between handshakes."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from certs import make_ca
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.serving_tls import ServingCertificate, parse_sans, server_credentials
from meshproxy.errors import ConfigError
from meshproxy.identity import certs

# Within the session CAs' validity (they are made now, for a year); whole seconds, as X.509 keeps them.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
TTL = timedelta(hours=2)
LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


def test_san_values_become_dns_or_ip_sans_and_127_0_0_1_is_always_there() -> None:
    sans = parse_sans(["Controlplane.Mesh", "*.mesh.svc", "10.0.0.5", "[::1]", "controlplane.mesh"])
    assert sans == (
        x509.DNSName("controlplane.mesh"),
        x509.DNSName("*.mesh.svc"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.5")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        LOOPBACK,
    )


def test_a_san_that_is_neither_a_name_nor_an_address_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_sans(["good.name", "bad name", "-lead.example", "x..y"])
    assert refused.value.problems == [
        f"--xds-tls-san: {value!r} is neither an IP address nor a DNS name"
        for value in ("bad name", "-lead.example", "x..y")
    ]


def test_the_serving_certificate_is_an_svid_of_the_controlplane_naming_its_hosts() -> None:
    ca = make_ca(trust_domain="mesh.local")
    serving = ServingCertificate(ca.ca, parse_sans(["cp.mesh"]), ttl=TTL, now=NOW)
    cert = serving.current.certificate
    spiffe_id = certs.verify_svid([cert], [ca.cert], now=NOW + TTL / 2)
    assert str(spiffe_id) == "spiffe://mesh.local/controlplane"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cp.mesh"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc == NOW + TTL
    assert certs.key_matches(cert, certs.load_key_pem(serving.current.key_pem))


def test_it_is_renewed_once_half_of_its_life_has_passed_with_a_new_key() -> None:
    serving = ServingCertificate(make_ca().ca, parse_sans([]), ttl=TTL, now=NOW)
    first = serving.current
    assert serving.renewed(NOW + TTL / 2 - timedelta(seconds=1)) is None
    second = serving.renewed(NOW + TTL / 2)
    assert second is not None and serving.current is second
    assert second.certificate.serial_number != first.certificate.serial_number
    assert second.key_pem != first.key_pem
    assert second.certificate.not_valid_after_utc == NOW + TTL / 2 + TTL
    assert serving.renewed(NOW + TTL / 2 + timedelta(seconds=1)) is None


def test_its_lifetime_ends_with_the_cas() -> None:
    ca = make_ca().ca
    end = ca.cert.not_valid_after_utc
    serving = ServingCertificate(ca, parse_sans([]), ttl=TTL, now=end - TTL / 4)
    assert serving.current.certificate.not_valid_after_utc == end
    with pytest.raises(ConfigError, match="the CA expired at"):
        ServingCertificate(ca, parse_sans([]), ttl=TTL, now=end)


async def _served_serial(port: int) -> int:
    """The serial of the certificate a fresh TLS handshake with 127.0.0.1:``port`` presents."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fake clock's certificates are not valid right now
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_grpc_serves_the_renewed_certificate_to_new_handshakes_without_a_restart() -> None:
    now = [NOW]
    serving = ServingCertificate(make_ca().ca, parse_sans([]), ttl=TTL, now=now[0])
    first = serving.current.certificate.serial_number
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(serving, lambda: now[0]))
    await server.start()
    try:
        assert await _served_serial(port) == first
        now[0] = NOW + TTL / 2
        renewed = await _served_serial(port)
        assert renewed == serving.current.certificate.serial_number != first
        assert await _served_serial(port) == renewed  # not renewed again until it is due
    finally:
        await server.stop(None)


@pytest.mark.parametrize("algorithm", list(certs.Algorithm), ids=lambda a: a.value)
async def test_a_grpc_client_verifies_the_chain_whatever_the_cas_algorithm(
    algorithm: certs.Algorithm,
) -> None:
    ca = make_ca(algorithm, trust_domain="mesh.local")
    serving = ServingCertificate(ca.ca, parse_sans(["cp.mesh"]), ttl=TTL, now=datetime.now(UTC))
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(serving, lambda: datetime.now(UTC)))
    await server.start()
    try:
        cases = [("cp.mesh", grpc.StatusCode.UNIMPLEMENTED), ("other.mesh", grpc.StatusCode.UNAVAILABLE)]
        for name, expected in cases:
            options = [("grpc.ssl_target_name_override", name), ("grpc.use_local_subchannel_pool", 1)]
            credentials = grpc.ssl_channel_credentials(ca.cert_pem)
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                call = channel.unary_unary("/no.Such/Method")
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call(b"", timeout=10)
            # UNIMPLEMENTED: the handshake succeeded and the server answered; UNAVAILABLE: refused.
            assert failed.value.code() == expected, failed.value.details()
    finally:
        await server.stop(None)
