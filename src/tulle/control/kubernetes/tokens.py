"""Identity.Certify with Kubernetes ServiceAccount tokens, checked by a TokenReview.

A proxy in a pod proves who it is with a projected ServiceAccount token whose
audience is Tulle's (`identity.tulle.io` by default), never the API server's:
a token minted for Tulle cannot be replayed against the API server, and a
token for the API server (or anything else) is refused here, because the
TokenReview names the audience Tulle accepts and the API server checks it.

The API server answers who the token belongs to
(`system:serviceaccount:<ns>:<sa>`), which gives the only identity the token
may ask for: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`. Anything that does not
look like a JWT is left to the other authenticators (join tokens), so
`tulle up` and hosts outside the cluster keep working against the same
control plane.
"""

from __future__ import annotations

import base64
import json
import re

from tulle.control.kubernetes.client import KubeClient, KubeError
from tulle.identity.authority import NotAuthenticated
from tulle.identity.spiffe import SpiffeId

DEFAULT_AUDIENCE = "identity.tulle.io"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
_SA_USER = re.compile(r"^system:serviceaccount:([a-z0-9][a-z0-9.-]*):([a-z0-9][a-z0-9.-]*)$")
MAX_TOKEN_BYTES = 16 * 1024


class TokenUnavailable(Exception):
    """The API server could not be asked (the request may succeed on a retry)."""


def looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or len(token) > MAX_TOKEN_BYTES:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(header, dict) and "alg" in header


class ServiceAccountAuthenticator:
    def __init__(
        self, client: KubeClient, trust_domain: str, *, audience: str = DEFAULT_AUDIENCE
    ) -> None:
        self.client = client
        self.trust_domain = trust_domain
        self.audience = audience

    async def identity_of(self, token: str) -> str | None:
        """The SPIFFE ID the token proves; None when it is no Kubernetes token.

        Raises NotAuthenticated when the API server refuses it, TokenUnavailable
        when the API server cannot be asked.
        """
        if not looks_like_jwt(token):
            return None
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            answer = await self.client.create(TOKEN_REVIEWS, review)
        except KubeError as exc:
            raise TokenUnavailable(f"TokenReview failed: {exc}") from None
        status = answer.get("status")
        if not isinstance(status, dict) or status.get("authenticated") is not True:
            error = status.get("error") if isinstance(status, dict) else None
            raise NotAuthenticated(
                f"the Kubernetes token is not valid for audience {self.audience!r}"
                + (f": {error}" if isinstance(error, str) and error else "")
            )
        audiences = status.get("audiences")
        if isinstance(audiences, list) and self.audience not in audiences:
            raise NotAuthenticated(f"the Kubernetes token is not for audience {self.audience!r}")
        user = status.get("user")
        username = user.get("username") if isinstance(user, dict) else None
        match = _SA_USER.match(username) if isinstance(username, str) else None
        if match is None:
            raise NotAuthenticated("the Kubernetes token does not belong to a ServiceAccount")
        namespace, account = match.groups()
        return SpiffeId(self.trust_domain, namespace, account).uri
