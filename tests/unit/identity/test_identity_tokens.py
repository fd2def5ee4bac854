"""Join tokens: bound to one identity, expiring, tamper-evident."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.identity.tokens import InvalidToken, make_token, new_secret, verify_token

API = "spiffe://cluster.local/ns/default/sa/api"
WEB = "spiffe://cluster.local/ns/default/sa/web"

SECRET = new_secret()


def test_round_trip() -> None:
    token = make_token(SECRET, WEB, now=1000, ttl_s=60)
    claims = verify_token(SECRET, token, WEB, now=1059)
    assert (claims.identity, claims.issued_at, claims.expires_at) == (WEB, 1000, 1060)


def test_expired() -> None:
    token = make_token(SECRET, WEB, now=1000, ttl_s=60)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token, WEB, now=1060)


def test_wrong_identity() -> None:
    token = make_token(SECRET, WEB, now=1000, ttl_s=60)
    with pytest.raises(InvalidToken, match=f"is for {WEB}, not {API}"):
        verify_token(SECRET, token, API, now=1001)


def test_tampered_payload_and_signature() -> None:
    token = make_token(SECRET, WEB, now=1000, ttl_s=60)
    prefix, payload, mac = token.split(".")
    forged_payload = make_token(SECRET, API, now=1000, ttl_s=60).split(".")[1]
    for forged in (
        f"{prefix}.{forged_payload}.{mac}",
        f"{prefix}.{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
    ):
        with pytest.raises(InvalidToken, match="signature does not match"):
            verify_token(SECRET, forged, WEB, now=1001)


def test_other_secret() -> None:
    token = make_token(new_secret(), WEB, now=1000, ttl_s=60)
    with pytest.raises(InvalidToken, match="another issuer"):
        verify_token(SECRET, token, WEB, now=1001)


@pytest.mark.parametrize("garbage", ["", "x", "tulle-jt1..", "tulle-jt1.a.b", "a.b.c", "é" * 50])
def test_garbage(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SECRET, garbage, WEB, now=0)


@given(st.text(max_size=300))
def test_any_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(InvalidToken):
        verify_token(SECRET, text, WEB, now=0)
