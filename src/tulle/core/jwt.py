"""End-user JWT authentication: the pure checks of one bearer token.

A `jwt` authentication of the inbound policy (docs/policy.md) names an issuer,
the audiences it accepts, where its signing keys are (a JWKS file or URL, which
`tulle.proxy.jwt` keeps loaded) and the claims a token must carry. This module
owns what is decided from bytes alone, with the clock injected:

- `bearer_token`: the token of an `Authorization: Bearer ...` header;
- `parse_jwks`: a JWK Set, keeping the asymmetric keys only;
- `verify`: signature (by joserfc, a maintained JOSE library; no hand-written
  crypto), then issuer, audience, expiry and not-before with a clock skew
  allowance, then the required claims;
- `claim_header_value`: a claim as the header value forwarded to the app.

Refused outright, whatever the keys: tokens over `MAX_TOKEN_BYTES`, `alg:
none`, and every symmetric algorithm (HS256 signed with the public key as
its secret is the classic confusion attack), because only the asymmetric
algorithms are ever accepted and only asymmetric keys are ever loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tulle.core.policy import JwtSpec

# A bearer token larger than this is refused before any decoding (Envoy's
# default header limits are 60 KiB in total; an ID token is rarely over 2 KiB).
MAX_TOKEN_BYTES: Final = 8192
# The only algorithms a token may use: asymmetric signatures.
ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_ASYMMETRIC_KTY: Final = frozenset({"RSA", "EC", "OKP"})
# A forwarded claim value longer than this is not forwarded.
MAX_CLAIM_HEADER_BYTES: Final = 1024


class JwksError(ValueError):
    """A JWK Set that cannot be used (not JSON, no usable key)."""


@dataclass(frozen=True, slots=True)
class Verified:
    claims: Mapping[str, object]


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive)."""
    if authorization is None or len(authorization) < 7:
        return None
    if authorization[:7].lower() != b"bearer ":
        return None
    token = authorization[7:].strip()
    return token or None


def parse_jwks(data: bytes) -> KeySet:
    """A JWK Set from its JSON, with only its asymmetric public keys."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('not a JWK Set (no "keys" list)')
    keys = [
        k
        for k in document["keys"]
        if isinstance(k, dict)
        and k.get("kty") in _ASYMMETRIC_KTY
        and "d" not in k  # never a private key
        and k.get("use", "sig") == "sig"
    ]
    if not keys:
        raise JwksError("no asymmetric signing key in the set")
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise JwksError(f"bad key: {exc}") from None


def verify(token: bytes, keys: KeySet, spec: JwtSpec, now: float) -> Verified | str:
    """The token's claims if it is valid for `spec` at `now`, else why not (for
    `error_description`; never echoes token bytes)."""
    if len(token) > MAX_TOKEN_BYTES:
        return "token too large"
    if token.count(b".") != 2:
        return "malformed token"
    try:
        decoded = jose_jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except JoseError as exc:
        # Bad signature, unknown kid, refused algorithm, bad encoding.
        return _describe(exc)
    except (ValueError, TypeError, KeyError):
        return "malformed token"
    claims = decoded.claims
    if not isinstance(claims, dict):
        return "malformed claims"
    if claims.get("iss") != spec.issuer:
        return "wrong issuer"
    if spec.audiences:
        aud = claims.get("aud")
        accepted = (aud,) if isinstance(aud, str) else aud if isinstance(aud, list) else ()
        if not any(a in spec.audiences for a in accepted):
            return "wrong audience"
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return "no expiry"
    if now > exp + spec.clock_skew_s:
        return "token expired"
    nbf = claims.get("nbf")
    if nbf is not None:
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            return "malformed claims"
        if now + spec.clock_skew_s < nbf:
            return "token not yet valid"
    for name, accepted_values in spec.claims:
        if not claim_matches(claims.get(name), name, accepted_values):
            return f"claim {name} not accepted"
    return Verified(claims)


def claim_matches(value: object, name: str, accepted: tuple[str, ...]) -> bool:
    if isinstance(value, str):
        if value in accepted:
            return True
        # OAuth's `scope` is one space-separated string (RFC 8693 4.2).
        return name == "scope" and any(v in accepted for v in value.split())
    if isinstance(value, list):
        return any(isinstance(v, str) and v in accepted for v in value)
    if isinstance(value, bool | int):
        return json.dumps(value) in accepted
    return False


def claim_header_value(value: object) -> bytes | None:
    """A claim as a header value: strings, numbers, booleans; lists joined by
    commas. None (not forwarded) for objects and for anything that could not
    be one header line."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        return None
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_CLAIM_HEADER_BYTES or any(c < 0x20 or c == 0x7F for c in encoded):
        return None
    return encoded


def _describe(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "BadSignatureError":
        return "bad signature"
    if name in ("UnsupportedAlgorithmError", "MissingAlgorithmError"):
        return "algorithm not accepted"
    if "kid" in str(exc).lower() or name == "InvalidKeyIdError":
        return "unknown key"
    return "invalid token"
