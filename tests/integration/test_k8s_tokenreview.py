"""The CA on Kubernetes: CSRs authenticated by the pod's projected service-account token through
TokenReview, end to end: the proxy's SVID client, the real grpc.aio CA, the controlplane's
Kubernetes client over HTTPS to the local API server (`k8s_api.FakeKubeApi`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.ca import Issuer
from controlplane.ca_service import CertificateAuthorityService
from controlplane.ca_store import load_or_create
from controlplane.k8s.annotations import TOKEN_AUDIENCE
from controlplane.k8s.api import Api
from controlplane.k8s.tokenreview import TOKEN_REVIEWS, TokenReviewAuthenticator
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.svid_client import SvidClient, SvidError

from .k8s_api import Account, FakeKubeApi
from .test_ca import CA, FakeClock

TD = "mesh.local"
WEB = SpiffeId.parse("spiffe://mesh.local/ns/shop/sa/web")
WEB_TOKEN = "projected-token-of-shop-web-0123456789"
API_TOKEN_OF_API = "projected-token-of-shop-api-0123456789"
KUBE_AUDIENCE_TOKEN = "token-for-the-api-server-audience-0123"
PERSON_TOKEN = "token-of-a-person-not-a-workload-0123456"
NO_AUDIENCE_CHECK_TOKEN = "token-reviewed-without-audiences-0123"


@contextlib.asynccontextmanager
async def cluster_ca(tmp_path: Path) -> AsyncIterator[tuple[CA, FakeKubeApi]]:
    async with FakeKubeApi() as fake:
        fake.accounts[WEB_TOKEN] = Account("shop", "web", (TOKEN_AUDIENCE,))
        fake.accounts[API_TOKEN_OF_API] = Account("shop", "api", (TOKEN_AUDIENCE,))
        fake.accounts[KUBE_AUDIENCE_TOKEN] = Account("shop", "web", ("https://kubernetes.default.svc",))
        fake.accounts[PERSON_TOKEN] = Account("shop", "web", (TOKEN_AUDIENCE,), username="alice@example.com")
        fake.accounts[NO_AUDIENCE_CHECK_TOKEN] = Account("shop", "web", (), checks_audiences=False)
        api = await Api.connect(fake.kubeconfig())
        clock = FakeClock()
        issuer = Issuer(load_or_create(tmp_path / "ca", trust_domain=TD, now=clock.utc()))
        server = CA(CertificateAuthorityService(issuer, TokenReviewAuthenticator(api, trust_domain=TD)))
        await server.start()
        try:
            yield server, fake
        finally:
            await server.stop()
            await api.close()


def svid_client(tmp_path: Path, ca: CA, token: str, identity: SpiffeId = WEB) -> SvidClient:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    return SvidClient(ca.target, identity, token_file, node_id="sidecar~10.1.0.7~web.shop", ttl=None)


async def test_a_pods_token_obtains_exactly_its_service_accounts_spiffe_id(tmp_path: Path) -> None:
    async with cluster_ca(tmp_path) as (ca, fake):
        svid = await svid_client(tmp_path, ca, WEB_TOKEN).fetch()
    assert svid.spiffe_id == WEB
    (review,) = fake.reviews
    assert review["spec"] == {"token": WEB_TOKEN, "audiences": [TOKEN_AUDIENCE]}
    assert review["kind"] == "TokenReview"


async def test_a_token_of_another_service_account_gets_nothing_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane.ca_service")
    async with cluster_ca(tmp_path) as (ca, _):
        with pytest.raises(SvidError) as info:
            await svid_client(tmp_path, ca, API_TOKEN_OF_API).fetch()
    assert info.value.code == "PERMISSION_DENIED"
    why = "the service-account token of shop/api grants spiffe://mesh.local/ns/shop/sa/api only"
    assert why in str(info.value)
    refusal = [r.getMessage() for r in caplog.records if "refused Sign" in r.getMessage()]
    assert len(refusal) == 1 and why in refusal[0] and "sidecar~10.1.0.7~web.shop" in refusal[0]


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (KUBE_AUDIENCE_TOKEN, "token audiences ['https://kubernetes.default.svc'] are invalid"),
        ("a-token-nobody-issued-0123456789", "invalid bearer token"),
    ],
    ids=["other-audience", "unknown"],
)
async def test_a_token_for_another_audience_or_unknown_is_unauthenticated(
    tmp_path: Path, token: str, message: str
) -> None:
    async with cluster_ca(tmp_path) as (ca, _):
        with pytest.raises(SvidError) as info:
            await svid_client(tmp_path, ca, token).fetch()
    assert info.value.code == "UNAUTHENTICATED"
    assert "did not authenticate the service-account token" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (PERSON_TOKEN, "'alice@example.com' is not a service account: only a pod's token obtains an SVID"),
        (NO_AUDIENCE_CHECK_TOKEN, "the service-account token is not for audience 'meshproxy-controlplane'"),
    ],
    ids=["not-a-service-account", "audience-not-confirmed"],
)
async def test_an_authenticated_token_that_is_not_a_pods_for_us_is_unauthenticated(
    tmp_path: Path, token: str, message: str
) -> None:
    async with cluster_ca(tmp_path) as (ca, _):
        with pytest.raises(SvidError) as info:
            await svid_client(tmp_path, ca, token).fetch()
    assert info.value.code == "UNAUTHENTICATED" and message in str(info.value)


async def test_an_api_server_that_cannot_review_is_unavailable_and_retryable(tmp_path: Path) -> None:
    async with cluster_ca(tmp_path) as (ca, fake):
        fake.fail(TOKEN_REVIEWS, 403)  # the controlplane lacks 'create tokenreviews'
        with pytest.raises(SvidError) as info:
            await svid_client(tmp_path, ca, WEB_TOKEN).fetch()
        assert info.value.code == "UNAVAILABLE" and "403" in str(info.value)
        assert (await svid_client(tmp_path, ca, WEB_TOKEN).fetch()).spiffe_id == WEB
