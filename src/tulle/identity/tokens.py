"""Local-mode join tokens: proof that a proxy may take one identity, for a while.

A token is `tulle-jt1.<payload>.<mac>`: the payload is base64url JSON
(`sub` = SPIFFE ID, `iat`, `exp`, `jti`), the MAC is HMAC-SHA256 over a
domain-separation label and the encoded payload, keyed with the secret kept
beside the issuer (`token.secret`, 0600). An HMAC rather than an issuer
signature so that tokens outlive issuer rotations, and the verifier is the
only party that needs the secret. Verification checks the MAC first, in
constant time, and only then reads the payload.

Kubernetes mode will check ServiceAccount tokens with TokenReview instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from tulle.identity.spiffe import InvalidSpiffeId, parse_spiffe_id

PREFIX = "tulle-jt1"
_MAC_LABEL = b"tulle join token v1\x00"
SECRET_BYTES = 32
# Tokens are small; anything larger is not ours and is refused before any work.
MAX_TOKEN_CHARS = 2048


class InvalidToken(ValueError):
    """The token does not prove the identity; the message says why."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    identity: str
    issued_at: int
    expires_at: int
    token_id: str


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def make_token(secret: bytes, identity: str, *, now: float, ttl_s: float) -> str:
    """A token binding `identity` (a SPIFFE ID) until `now + ttl_s`."""
    parse_spiffe_id(identity)  # never sign a name Certify would refuse anyway
    claims = {
        "sub": identity,
        "iat": int(now),
        "exp": int(now + ttl_s),
        "jti": secrets.token_hex(8),
    }
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}.{payload}.{_b64encode(_mac(secret, payload))}"


def verify_token(secret: bytes, token: str, identity: str, *, now: float) -> TokenClaims:
    """The claims of `token` if it is genuine, unexpired and bound to `identity`."""
    if not token:
        raise InvalidToken("no join token was presented")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("join token is too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidToken(f"join token is not a {PREFIX} token")
    _, payload, mac_text = parts
    try:
        presented_mac = _b64decode(mac_text)
    except ValueError:
        raise InvalidToken("join token signature is not base64url") from None
    if not hmac.compare_digest(presented_mac, _mac(secret, payload)):
        raise InvalidToken(
            "join token signature does not match: it was altered, or made for another issuer"
        )
    claims = _decode_claims(payload)
    if claims.identity != identity:
        raise InvalidToken(f"join token is for {claims.identity}, not {identity}")
    if now >= claims.expires_at:
        raise InvalidToken(f"join token expired {int(now) - claims.expires_at} s ago")
    return claims


def _decode_claims(payload: str) -> TokenClaims:
    try:
        raw = json.loads(_b64decode(payload))
        claims = TokenClaims(
            identity=str(raw["sub"]),
            issued_at=int(raw["iat"]),
            expires_at=int(raw["exp"]),
            token_id=str(raw["jti"]),
        )
        parse_spiffe_id(claims.identity)
    except (ValueError, KeyError, TypeError, InvalidSpiffeId):
        # Only reachable with a valid MAC, i.e. a token made by a broken signer.
        raise InvalidToken("join token payload is malformed") from None
    return claims


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, _MAC_LABEL + payload.encode("ascii"), hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError) as error:
        raise ValueError(str(error)) from None
