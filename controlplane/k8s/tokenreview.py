"""The CA's `Authenticator` on Kubernetes: a pod's projected service-account token, checked by
the API server's TokenReview.

Owns the rules, in order (the first failure is the answer, logged by the CA servicer with the
node and peer):

1. the ``authorization`` metadata is ``Bearer <token>`` -> else UNAUTHENTICATED;
2. ``POST /apis/authentication.k8s.io/v1/tokenreviews`` with the token and ``spec.audiences =
   [audience]`` (`annotations.TOKEN_AUDIENCE`, the audience the injector projects the token
   for: a token minted for another audience, such as the API server's own, is refused, so a
   token stolen from elsewhere cannot buy an SVID). No answer (the API server unreachable, the
   controlplane lacking the ``create tokenreviews`` permission) -> UNAVAILABLE, retryable;
3. ``status.authenticated`` is true and ``status.audiences`` holds ``audience`` (an API server
   that ignored the audience check answers without it) -> else UNAUTHENTICATED with the
   server's ``status.error``;
4. the user is ``system:serviceaccount:<namespace>:<name>`` -> else UNAUTHENTICATED (a person's
   or a node's token proves no workload identity).

The grant is exactly ``spiffe://<trust domain>/ns/<namespace>/sa/<name>`` (`annotations.spiffe_id`,
the identity the discovery source gives the pods of that service account): a CSR for any other
SPIFFE ID is then refused by the CA core with PERMISSION_DENIED, naming both.
Nothing is cached: a CSR is rare (at start, then at half of each SVID's life), and a token that
was revoked (its pod deleted) must stop working at once.

Must not depend on: grpc, the discovery source, the mesh model.
"""

from __future__ import annotations

import logging

import aiohttp

from controlplane.errors import Unauthenticated, Unavailable
from controlplane.k8s.annotations import TOKEN_AUDIENCE, spiffe_id
from controlplane.k8s.api import Api
from controlplane.k8s.errors import ApiError
from controlplane.tokens import Grant, bearer_token
from meshproxy.errors import IdentityError
from meshproxy.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SERVICE_ACCOUNT_USER = "system:serviceaccount:"


class TokenReviewAuthenticator:
    """Service-account tokens, reviewed by the API server, as SPIFFE IDs of ``trust_domain``."""

    def __init__(self, api: Api, *, trust_domain: str, audience: str = TOKEN_AUDIENCE) -> None:
        self.api = api
        self.trust_domain = trust_domain
        self.audience = audience

    async def authenticate(self, authorization: str | None) -> Grant:
        token = bearer_token(authorization)
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            review = await self.api.post(TOKEN_REVIEWS, body)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(
                f"the Kubernetes API could not review the service-account token ({exc})"
            ) from None
        status = review.get("status") or {}
        if not status.get("authenticated"):
            reason = status.get("error") or "no reason given"
            raise Unauthenticated(
                f"the Kubernetes API did not authenticate the service-account token: {reason}"
            )
        if self.audience not in (status.get("audiences") or ()):
            raise Unauthenticated(
                f"the service-account token is not for audience {self.audience!r} (it is for "
                f"{status.get('audiences') or 'no audience the API server reported'}); project it with "
                f"audience {self.audience!r}"
            )
        username = str((status.get("user") or {}).get("username", ""))
        namespace, _, account = username.removeprefix(SERVICE_ACCOUNT_USER).partition(":")
        if not username.startswith(SERVICE_ACCOUNT_USER) or not namespace or not account:
            raise Unauthenticated(
                f"{username!r} is not a service account: only a pod's token obtains an SVID"
            )
        try:
            identity = SpiffeId.parse(spiffe_id(self.trust_domain, namespace, account))
        except IdentityError as exc:
            raise Unauthenticated(f"service account {namespace}/{account}: {exc}") from None
        return Grant(identity, credential=f"the service-account token of {namespace}/{account}")
