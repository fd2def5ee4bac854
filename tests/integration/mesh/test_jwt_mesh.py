"""End-user JWT authentication through real processes: control plane, `tulle proxy`, real apps.

Three workloads behind their own inbound proxies (docs/policy.md, "End-user
tokens"): `books` (HTTP/1, keys from a JWKS file, `sub` forwarded to the app
as `x-user`), `echo` (gRPC, keys from a JWKS URL served by another process)
and `whoami` (gRPC, the keys file again; its app reports every header it got,
so the claim forwarded over HTTP/2 is seen). Tokens are signed here with
joserfc; the proxies only ever see the public keys.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import sys
import time
from pathlib import Path

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey
from meshkit import start_control, wait_until, workload_proxy
from support.mesh import Backend, Proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

ISSUER = "https://issuer.test"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "e1"}, private=True)


WHOAMI = Path(__file__).with_name("whoami_app.py")


def _manifest(app: int, echo: int, whoami: int, jwks_file: Path, jwks_url: str) -> str:
    return f"""\
services:
  - name: books
    endpoints: [{LOOPBACK}:{app}]
  - name: echo
    protocol: grpc
    endpoints: [{LOOPBACK}:{echo}]
  - name: whoami
    protocol: grpc
    endpoints: [{LOOPBACK}:{whoami}]
policy:
  servers:
    - {{name: books-http, workload: books, port: {app}}}
    - {{name: echo-grpc, workload: echo, port: {echo}, protocol: grpc}}
    - {{name: whoami-grpc, workload: whoami, port: {whoami}, protocol: grpc}}
  authentications:
    - name: readers
      jwt:
        issuer: {ISSUER}
        audiences: [books]
        jwksFile: {jwks_file}
        clockSkew: 5s
        forwardClaims: {{sub: x-user}}
    - name: echo-users
      jwt:
        issuer: {ISSUER}
        audiences: [echo]
        jwksUrl: {jwks_url}
    - {{name: anyone, unauthenticated: true}}
  httpRoutes:
    - name: open
      server: books-http
      matches: [{{headers: [{{name: x-open, value: "yes"}}]}}]
  authorizationPolicies:
    - {{name: open-to-all, target: {{httpRoute: open}}, requiredAuthentications: [anyone]}}
    - {{name: books-readers, target: {{server: books-http}}, requiredAuthentications: [readers]}}
    - {{name: echo-users, target: {{server: echo-grpc}}, requiredAuthentications: [echo-users]}}
    - {{name: whoami-readers, target: {{server: whoami-grpc}}, requiredAuthentications: [readers]}}
"""


def token(audience: str = "books", key: RSAKey = KEY, **claims: object) -> str:
    payload: dict[str, object] = {
        "iss": ISSUER,
        "aud": audience,
        "sub": "alice",
        "exp": int(time.time()) + 300,
    }
    payload.update(claims)
    return jose_jwt.encode({"alg": "RS256", "kid": "k1"}, payload, key)


class World:
    def __init__(self, books: Proxy, echo: Proxy, whoami: Proxy, jwks: Path) -> None:
        self.jwks = jwks
        self.books = books
        self.echo = echo
        self.whoami = whoami


@pytest.fixture(scope="module")
def world(
    module_processes: ProcessGroup,
    http_backend: Backend,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    directory = tmp_path_factory.mktemp("jwt")
    jwks = directory / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [KEY.as_dict(private=False), EC_KEY.as_dict(private=False)]})
    )
    # The JWKS URL: served by its own process, as an identity provider would be.
    keys_server = module_processes.start(
        "jwks-server",
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", LOOPBACK, "--directory",
         str(directory)],
    )  # fmt: skip
    port = int(keys_server.wait_for_match(re.compile(r"port (\d+)"), "serving line").group(1))
    echo_app: Server = start_grpc_server(module_processes, "echo-app")
    whoami = module_processes.start("whoami", [sys.executable, str(WHOAMI)])
    whoami_port = int(whoami.wait_for_match(re.compile(r"listening (\d+)"), "listening").group(1))
    path = directory / "mesh.yaml"
    url = f"http://{LOOPBACK}:{port}/jwks.json"
    path.write_text(_manifest(http_backend.port, echo_app.port, whoami_port, jwks, url))
    control = start_control(module_processes, path)

    def inbound(workload: str, app: str) -> Proxy:
        return workload_proxy(module_processes, control, workload, app)

    return World(
        inbound("books", http_backend.addr),
        inbound("echo", echo_app.addr),
        inbound("whoami", f"{LOOPBACK}:{whoami_port}"),
        jwks,
    )


def _get(
    proxy: Proxy, headers: dict[str, str]
) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    conn = http.client.HTTPConnection(*proxy.inbound, timeout=10)
    try:
        conn.request("GET", "/headers", headers={"host": "books", **headers})
        response = conn.getresponse()
        body = response.read()
        seen: list[tuple[str, str]] = []
        if response.status == 200:
            seen = [(n.lower(), v) for n, v in json.loads(body)["headers"]]
        return response.status, {k.lower(): v for k, v in response.getheaders()}, seen
    finally:
        conn.close()


def test_a_valid_token_passes_and_the_app_sees_the_claim_not_the_forgery(world: World) -> None:
    status, _, seen = _get(
        world.books,
        {"authorization": f"Bearer {token()}", "x-user": "root", "X-USER": "admin"},
    )
    assert status == 200
    assert [v for n, v in seen if n == "x-user"] == ["alice"]


def test_an_es256_token_passes_and_alg_none_does_not(world: World) -> None:
    payload = {"iss": ISSUER, "aud": "books", "sub": "erin", "exp": int(time.time()) + 300}
    es256 = jose_jwt.encode({"alg": "ES256", "kid": "e1"}, payload, EC_KEY)
    status, _, seen = _get(world.books, {"authorization": f"Bearer {es256}"})
    assert status == 200
    assert [v for n, v in seen if n == "x-user"] == ["erin"]
    # The same claims unsigned ("alg": "none"): refused, whatever the key set holds.
    unsigned = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in ({"alg": "none", "kid": "e1"}, payload)
    )
    status, headers, _ = _get(world.books, {"authorization": f"Bearer {unsigned}."})
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer realm="tulle", error="invalid_token"')


def test_a_forged_claim_header_is_dropped_even_without_a_token(world: World) -> None:
    status, _, seen = _get(world.books, {"x-open": "yes", "x-user": "root"})
    assert status == 200
    assert [v for n, v in seen if n == "x-user"] == []


@pytest.mark.parametrize(
    ("make", "description"),
    [
        (lambda: token(exp=int(time.time()) - 60), "token expired"),
        (lambda: token(key=STRANGER), "bad signature"),
        (lambda: token(audience="other"), "wrong audience"),
        (lambda: token(iss="https://evil.test"), "wrong issuer"),
        (lambda: "not-a-token", "malformed token"),
    ],
)
def test_invalid_tokens_get_401_invalid_token(world: World, make: object, description: str) -> None:
    status, headers, _ = _get(world.books, {"authorization": f"Bearer {make()}"})  # type: ignore[operator]
    assert status == 401
    assert headers["www-authenticate"] == (
        f'Bearer realm="tulle", error="invalid_token", error_description="{description}"'
    )
    assert headers["tulle-proxy-error"] == "unauthenticated"


def test_a_missing_token_gets_401_with_a_bare_challenge(world: World) -> None:
    status, headers, _ = _get(world.books, {})
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="tulle"'
    metrics = world.books.metrics()
    assert metrics.total("inbound_jwt_total", result="missing") >= 1
    assert metrics.total("inbound_jwt_total", result="valid") >= 1
    assert metrics.total("inbound_jwt_total", result="invalid") >= 5


def test_grpc_tokens_from_a_jwks_url(world: World) -> None:
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{world.echo.inbound_port}",
        options=[("grpc.default_authority", "echo"), ("grpc.enable_retries", 0)],
    )
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)

        def call(metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
            try:
                stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10, metadata=metadata)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        good = (("authorization", f"Bearer {token('echo')}"),)
        # The keys come from the URL off the request path: until then, 401s, never a hang.
        wait_until(lambda: call(good) == grpc.StatusCode.OK, 20, "the JWKS URL to be fetched")
        assert call(()) == grpc.StatusCode.UNAUTHENTICATED
        expired = (("authorization", f"Bearer {token('echo', exp=int(time.time()) - 60)}"),)
        assert call(expired) == grpc.StatusCode.UNAUTHENTICATED
        # A token for another audience is no token for this one.
        assert call((("authorization", f"Bearer {token('books')}"),)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_grpc_claim_headers_replace_the_callers(world: World) -> None:
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{world.whoami.inbound_port}",
        options=[("grpc.default_authority", "whoami"), ("grpc.enable_retries", 0)],
    )
    with channel:
        who = channel.unary_unary(
            "/whoami.Who/Ask", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        reply = who(
            b"",
            timeout=10,
            metadata=(("authorization", f"Bearer {token()}"), ("x-user", "root")),
        )
        seen = json.loads(reply)
        assert [v for n, v in seen["headers"] if n == "x-user"] == ["alice"]
        with pytest.raises(grpc.RpcError) as refused:
            who(b"", timeout=10, metadata=(("x-user", "alice"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_rotated_jwks_file_is_read_again(world: World) -> None:
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True)
    payload = {"iss": ISSUER, "aud": "books", "sub": "bob", "exp": int(time.time()) + 300}
    new_token = jose_jwt.encode({"alg": "RS256", "kid": "k2"}, payload, rotated)
    assert _get(world.books, {"authorization": f"Bearer {new_token}"})[0] == 401
    keys = [KEY.as_dict(private=False), rotated.as_dict(private=False)]
    temporary = world.jwks.with_suffix(".new")
    temporary.write_text(json.dumps({"keys": keys}))
    temporary.replace(world.jwks)  # atomically, as a key-rotation job would
    wait_until(
        lambda: _get(world.books, {"authorization": f"Bearer {new_token}"})[0] == 200,
        10,
        "the rotated key to be read",
    )
    status, _, seen = _get(world.books, {"authorization": f"Bearer {new_token}"})
    assert status == 200 and [v for n, v in seen if n == "x-user"] == ["bob"]
    # The old key is still in the set: its tokens keep passing.
    assert _get(world.books, {"authorization": f"Bearer {token()}"})[0] == 200
