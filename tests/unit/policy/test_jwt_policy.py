"""End-user JWT in the policy: manifest, wire, decision bits, and the proxy's per-request check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from tulle.api.policy_client import policy_from_message
from tulle.api.proto import policy_pb2 as pb
from tulle.control.manifest import ManifestError, parse_manifest
from tulle.control.policy.translate import policy_message
from tulle.core.policy import InboundPolicy
from tulle.proxy.jwt import InboundJwt
from tulle.proxy.metrics import Metrics

NOW = 1_800_000_000.0
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


def manifest_text(jwks: str = "/etc/tulle/jwks.json", extra: str = "") -> str:
    return (
        "services: [{name: web, port: 8080}]\n"
        "policy:\n"
        "  servers: [{name: web-http, workload: web, port: 8080}]\n"
        "  authentications:\n"
        "    - name: users\n"
        "      jwt:\n"
        "        issuer: https://issuer.test\n"
        "        audiences: [books]\n"
        f"        jwksFile: {jwks}\n"
        "        clockSkew: 30s\n"
        "        claims: {scope: [read, admin]}\n"
        "        forwardClaims: {sub: X-User, email: x-user-email}\n"
        f"{extra}"
        "    - {name: lan, networks: [127.0.0.0/8]}\n"
        "  httpRoutes: [{name: admin, server: web-http, matches: [{path: {value: /admin}}]}]\n"
        "  authorizationPolicies:\n"
        "    - name: users-lan\n"
        "      target: {server: web-http}\n"
        "      requiredAuthentications: [users, lan]\n"
    )


def compiled(jwks: str = "/etc/tulle/jwks.json") -> InboundPolicy:
    return parse_manifest(manifest_text(jwks)).authorization.compile("web", 8080)


def test_the_manifest_reads_a_jwt_authentication() -> None:
    spec = parse_manifest(manifest_text()).authorization.authentications[0].jwt
    assert spec is not None
    assert spec.issuer == "https://issuer.test"
    assert spec.audiences == ("books",)
    assert spec.clock_skew_s == 30.0
    assert spec.claims == (("scope", ("read", "admin")),)
    assert spec.forward_claims == (("sub", "x-user"), ("email", "x-user-email"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("        jwksFile: /etc/tulle/jwks.json\n", "", "exactly one of jwksFile or jwksUrl"),
        ("/etc/tulle/jwks.json", "jwks.json", "absolute path"),
        ("X-User", "tulle-client-id", "cannot carry a claim"),
        ("X-User", "bad header", "cannot carry a claim"),
        ("30s", "1h", "at most 10m"),
    ],
)
def test_bad_jwt_authentications_are_refused(old: str, new: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(manifest_text().replace(old, new))


def test_the_wire_carries_it_unchanged() -> None:
    policy = compiled()
    wire = pb.InboundPolicy.FromString(policy_message(policy).SerializeToString())
    assert policy_from_message(wire) == policy


def test_a_policy_without_jwt_reads_no_token() -> None:
    # The request path's whole cost when no jwt authentication applies: this test.
    policy = parse_manifest(manifest_text().replace("users, lan", "lan")).authorization.compile(
        "web", 8080
    )
    assert policy.jwt_checks == ()
    assert policy.jwt_headers == ()
    assert InboundPolicy(workload="w", port=1).jwt_checks == ()


def test_a_jwt_authentication_holds_only_with_its_bit() -> None:
    policy = compiled()
    assert len(policy.jwt_checks) == 1
    assert policy.jwt_headers == (b"x-user", b"x-user-email")
    bit = policy.jwt_checks[0][0]
    header = {b"host": b"web"}.get
    denied = policy.authorize_http(None, "127.0.0.1", b"GET", b"/", header)
    assert not denied.allowed
    allowed = policy.authorize_http(None, "127.0.0.1", b"GET", b"/", header, bit)
    assert allowed.allowed and allowed.policy == "users-lan"
    # Both authentications must hold: a token from outside the network is not enough.
    assert not policy.authorize_http(None, "10.0.0.1", b"GET", b"/", header, bit).allowed
    # A connection never carries a token.
    assert not policy.authorize_tcp(None, "127.0.0.1").allowed


def token(**claims: object) -> bytes:
    base: dict[str, object] = {
        "iss": "https://issuer.test",
        "aud": "books",
        "sub": "alice",
        "email": "alice@example.test",
        "scope": "read",
        "exp": int(NOW) + 60,
    }
    base.update(claims)
    return jose_jwt.encode({"alg": "RS256", "kid": "k1"}, base, KEY).encode()


def test_the_proxy_checks_a_token_against_a_jwks_file(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    policy = compiled(str(jwks))
    metrics = Metrics()

    async def run() -> None:
        checker = InboundJwt(metrics, clock=lambda: NOW)
        try:
            # No keys yet: refused at once, never waiting.
            no_keys = checker.check(policy, {b"authorization": b"Bearer " + token()}.get)
            assert no_keys.error == "signing keys not loaded"
            jwks.write_text(json.dumps({"keys": [KEY.as_dict(private=False)]}))
            source = checker.sources[str(jwks)]
            source.reload_file()
            good = checker.check(policy, {b"authorization": b"Bearer " + token()}.get)
            assert good.error is None and good.mask == policy.jwt_checks[0][0]
            assert good.strip == (b"x-user", b"x-user-email")
            assert good.add == ((b"x-user", b"alice"), (b"x-user-email", b"alice@example.test"))
            bad = checker.check(policy, {b"authorization": b"Bearer " + token(scope="x")}.get)
            assert bad.error == "claim scope not accepted" and bad.mask == 0
            missing = checker.check(policy, {}.get)
            assert missing.missing and missing.error is None and missing.add == ()
            # A broken file keeps the last good keys.
            jwks.write_text("{")
            source.reload_file()
            assert source.keys is not None and source.failures == 2
        finally:
            await checker.close()

    asyncio.run(run())
    counts = {
        labels: n for (name, labels), n in metrics.counters.items() if name == "inbound_jwt_total"
    }
    assert counts == {
        (("result", "no-keys"),): 1,
        (("result", "valid"),): 1,
        (("result", "invalid"),): 1,
        (("result", "missing"),): 1,
    }


def test_the_documented_jwt_example_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "policy.md").read_text()
    section = doc.split("## End-user tokens (JWT)", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_manifest("services: [{name: books, port: 8080}]\n" + example).authorization
    policy = spec.compile("books", 8080)
    assert [s.jwks_url for _, s in policy.jwt_checks] == ["http://login.default:8080/jwks"]
    assert policy.jwt_headers == (b"x-user", b"x-user-email")


def test_a_jwks_url_keeps_its_last_good_keys_when_a_fetch_fails() -> None:
    import httpx

    from tulle.proxy.jwt import JwksSource

    answers = [
        httpx.Response(503),
        httpx.Response(200, content=json.dumps({"keys": [KEY.as_dict(private=False)]}).encode()),
        httpx.Response(200, content=b"not json"),
        httpx.Response(500),
    ]
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return answers.pop(0)

    async def run() -> None:
        source = JwksSource("http://login.test/jwks")
        assert source.is_url and source.keys is None
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            assert not await source._fetch(client)
            assert source.keys is None
            assert await source._fetch(client)
            loaded = source.keys
            assert loaded is not None
            assert not await source._fetch(client)
            assert not await source._fetch(client)
            assert source.keys is loaded
        assert (source.loads, source.failures) == (1, 3)

    asyncio.run(run())
    assert seen == ["http://login.test/jwks"] * 4
