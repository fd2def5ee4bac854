"""SPIFFE ID parsing and human durations."""

from __future__ import annotations

import pytest

from tulle.identity.duration import format_duration, parse_lifetime
from tulle.identity.spiffe import InvalidSpiffeId, SpiffeId, parse_spiffe_id, resolve_identity


def test_parse_round_trips() -> None:
    parsed = parse_spiffe_id("spiffe://cluster.local/ns/default/sa/web")
    assert parsed == SpiffeId("cluster.local", "default", "web")
    assert parsed.uri == "spiffe://cluster.local/ns/default/sa/web"


@pytest.mark.parametrize(
    "text",
    [
        "http://cluster.local/ns/a/sa/b",
        "spiffe://Cluster.Local/ns/a/sa/b",
        "spiffe://cluster.local/ns/a/sa/b/extra",
        "spiffe://cluster.local/sa/b/ns/a",
        "spiffe://cluster.local/ns//sa/b",
        "spiffe://cluster.local/ns/A/sa/b",
        "spiffe:///ns/a/sa/b",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id(text)


def test_resolve_short_form() -> None:
    assert resolve_identity("prod/api", "example.org").uri == "spiffe://example.org/ns/prod/sa/api"
    assert resolve_identity("spiffe://x.y/ns/a/sa/b", "ignored.org").trust_domain == "x.y"
    with pytest.raises(InvalidSpiffeId, match="namespace"):
        resolve_identity("api", "example.org")


def test_durations() -> None:
    assert parse_lifetime("30s") == 30
    assert parse_lifetime("1h30m") == 5400
    assert parse_lifetime("24h") == 86_400
    assert parse_lifetime("1y") == 365 * 86_400
    for bad in ("", "10", "h", "10x", "0s", "5m 3"):
        with pytest.raises(ValueError):
            parse_lifetime(bad)
    assert format_duration(90_061) == "1d 1h"
    assert format_duration(-59) == "-59s"
    assert format_duration(0) == "0s"
