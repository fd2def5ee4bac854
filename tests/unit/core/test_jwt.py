"""tulle.core.jwt: one bearer token checked against a JWK Set, clock injected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from tulle.core.jwt import (
    MAX_TOKEN_BYTES,
    JwksError,
    JwtSpec,
    Verified,
    bearer_token,
    claim_header_value,
    parse_jwks,
    verify,
)

NOW = 1_800_000_000.0
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
EC = ECKey.generate_key("P-256", parameters={"kid": "e1"}, private=True)
JWKS = json.dumps({"keys": [KEY.as_dict(private=False), EC.as_dict(private=False)]}).encode()
KEYS = parse_jwks(JWKS)
SPEC = JwtSpec(issuer="https://issuer.test", audiences=("books",), clock_skew_s=30)


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": "https://issuer.test",
        "aud": "books",
        "sub": "alice",
        "exp": int(NOW) + 300,
        "nbf": int(NOW) - 10,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(
    payload: dict[str, object], key: object = KEY, header: dict[str, str] | None = None
) -> bytes:
    return jose_jwt.encode(header or {"alg": "RS256", "kid": "k1"}, payload, key).encode()  # type: ignore[arg-type]


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_a_good_token_is_verified() -> None:
    result = verify(token(claims()), KEYS, SPEC, NOW)
    assert isinstance(result, Verified)
    assert result.claims["sub"] == "alice"


def test_an_ec_key_of_the_set_verifies_too() -> None:
    result = verify(token(claims(), EC, {"alg": "ES256", "kid": "e1"}), KEYS, SPEC, NOW)
    assert isinstance(result, Verified)


def test_expired_beyond_the_skew_is_refused_within_it_accepted() -> None:
    assert verify(token(claims(exp=int(NOW) - 31)), KEYS, SPEC, NOW) == "token expired"
    assert isinstance(verify(token(claims(exp=int(NOW) - 29)), KEYS, SPEC, NOW), Verified)


def test_a_token_without_expiry_is_refused() -> None:
    assert verify(token(claims(exp=None)), KEYS, SPEC, NOW) == "no expiry"


def test_not_yet_valid_is_refused() -> None:
    assert verify(token(claims(nbf=int(NOW) + 60)), KEYS, SPEC, NOW) == "token not yet valid"
    assert isinstance(verify(token(claims(nbf=int(NOW) + 20)), KEYS, SPEC, NOW), Verified)


def test_wrong_issuer_and_wrong_audience() -> None:
    assert verify(token(claims(iss="https://evil.test")), KEYS, SPEC, NOW) == "wrong issuer"
    assert verify(token(claims(aud="other")), KEYS, SPEC, NOW) == "wrong audience"
    assert verify(token(claims(aud=None)), KEYS, SPEC, NOW) == "wrong audience"
    assert isinstance(verify(token(claims(aud=["x", "books"])), KEYS, SPEC, NOW), Verified)


def test_bad_signature_and_unknown_kid() -> None:
    assert verify(token(claims(), OTHER), KEYS, SPEC, NOW) == "bad signature"
    forged = token(claims(), OTHER, {"alg": "RS256", "kid": "nope"})
    assert verify(forged, KEYS, SPEC, NOW) == "unknown key"
    good = token(claims())
    head, _body, sig = good.split(b".")
    tampered = head + b"." + b64(json.dumps(claims(sub="root")).encode()) + b"." + sig
    assert verify(tampered, KEYS, SPEC, NOW) == "bad signature"


def test_alg_none_is_refused() -> None:
    head = b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    result = verify(head + b"." + body + b".", KEYS, SPEC, NOW)
    assert not isinstance(result, Verified)


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The confusion attack: the public key (public knowledge) as an HMAC secret.
    secret = json.dumps(KEY.as_dict(private=False)).encode()
    for material in (secret, KEY.as_pem(private=False)):
        head = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
        body = b64(json.dumps(claims()).encode())
        sig = b64(hmac.new(material, head + b"." + body, hashlib.sha256).digest())
        result = verify(head + b"." + body + b"." + sig, KEYS, SPEC, NOW)
        assert not isinstance(result, Verified)
    # And a JWKS holding a symmetric key does not load it.
    oct_key = OctKey.generate_key(256, parameters={"kid": "s"}).as_dict(private=True)
    with pytest.raises(JwksError):
        parse_jwks(json.dumps({"keys": [oct_key]}).encode())


def test_an_oversized_token_is_refused_before_decoding() -> None:
    big = token(claims(pad="x" * MAX_TOKEN_BYTES))
    assert verify(big, KEYS, SPEC, NOW) == "token too large"
    assert verify(b"garbage", KEYS, SPEC, NOW) == "malformed token"
    assert not isinstance(verify(b"a.b.c", KEYS, SPEC, NOW), Verified)


def test_required_claims() -> None:
    spec = JwtSpec(
        issuer="https://issuer.test", claims=(("scope", ("admin",)), ("groups", ("ops",)))
    )
    ok = token(claims(scope="read admin", groups=["dev", "ops"]))
    assert isinstance(verify(ok, KEYS, spec, NOW), Verified)
    assert verify(token(claims(scope="read", groups=["ops"])), KEYS, spec, NOW) == (
        "claim scope not accepted"
    )
    assert verify(token(claims(scope="admin")), KEYS, spec, NOW) == "claim groups not accepted"


def test_bearer_token_and_claim_headers() -> None:
    assert bearer_token(b"Bearer abc") == b"abc"
    assert bearer_token(b"bearer  abc ") == b"abc"
    assert bearer_token(b"Basic abc") is None
    assert bearer_token(b"Bearer ") is None
    assert bearer_token(None) is None
    assert claim_header_value("alice") == b"alice"
    assert claim_header_value(["a", "b"]) == b"a,b"
    assert claim_header_value(7) == b"7"
    assert claim_header_value("x\r\ny: z") is None
    assert claim_header_value({"a": 1}) is None


def test_bad_jwks_documents() -> None:
    for data in (b"{", b"[]", b'{"keys": 1}', b'{"keys": []}'):
        with pytest.raises(JwksError):
            parse_jwks(data)
    with pytest.raises(JwksError):
        parse_jwks(json.dumps({"keys": [KEY.as_dict(private=True)]}).encode())
