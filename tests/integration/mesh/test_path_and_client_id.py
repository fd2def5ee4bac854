"""What the app behind an inbound proxy sees: the path policy matched, and the verified identity.

Real proxies with real identities (issue 11, items 4 and 5): `books` (its app
is `whoami_app.py`, which answers every request with the path and the
`tulle-client-id` values it received), `web` and `other` (outbound proxies
holding those identities, calling books over mTLS), and plaintext clients
dialling books' inbound directly. The policy lets anyone call `/public` and
only `web` call `/admin`; everything else is denied.

Path tricks: every class of variant (dot segments, `%2e`, encoded and doubled
slashes, backslashes, mixed-case and invalid escapes, overlong UTF-8, `..;`)
is sent over HTTP/1 (raw bytes) and HTTP/2 (raw `:path`), directly and through
a proxy. Each either reaches the app as the normalised path and is authorized
as such, or is refused with 400 -- never reaches `/admin` unauthorized.

Identity: a caller's own `tulle-client-id` (headers or trailers, any case,
HTTP/1, h2c, gRPC) never reaches the app; a caller over mTLS is seen as its
verified identity.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import h2.config
import h2.connection
import h2.events
import pytest
from meshkit import start_control, wait_until, write_manifest
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TD = "tulle.local"
WEB = f"spiffe://{TD}/ns/default/sa/web"
OTHER = f"spiffe://{TD}/ns/default/sa/other"
BOOKS = f"spiffe://{TD}/ns/default/sa/books"
APP = Path(__file__).with_name("whoami_app.py")

POLICY = """
policy:
  servers:
    - {name: books-http, workload: books, port: APP_PORT}
  authentications:
    - {name: anyone, unauthenticated: true}
    - {name: web-only, identities: ["spiffe://tulle.local/ns/default/sa/web"]}
  httpRoutes:
    - {name: public, server: books-http, matches: [{path: {type: PathPrefix, value: /public}}]}
    - {name: admin, server: books-http, matches: [{path: {type: PathPrefix, value: /admin}}]}
  authorizationPolicies:
    - {name: public-open, target: {httpRoute: public}, requiredAuthentications: [anyone]}
    - {name: admin-web, target: {httpRoute: admin}, requiredAuthentications: [web-only]}
"""

# (what the client sends, the normalised path the app must see; None: refused with 400)
VARIANTS: list[tuple[str, str | None]] = [
    # dot segments
    ("/public/../admin", "/admin"),
    ("/public/./../admin", "/admin"),
    ("/public/x/../../admin/", "/admin/"),
    ("/../admin", "/admin"),
    ("/public/./x", "/public/x"),
    # percent-encoded dots, either case, and unreserved characters
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/%2E%2E/admin", "/admin"),
    ("/public/.%2E/admin", "/admin"),
    ("/public/%2e%2E/%61dmin", "/admin"),
    ("/%61%64%6D%69%6E", "/admin"),
    ("/%70ublic/%7Euser", "/public/~user"),
    ("/public/a%3fb", "/public/a%3Fb"),
    # doubled slashes
    ("//admin", "/admin"),
    ("/public//../admin", "/admin"),
    ("/public//x", "/public/x"),
    # encoded slashes and backslashes: ambiguous, refused
    ("/public/..%2fadmin", None),
    ("/public/..%2Fadmin", None),
    ("/public%2F..%2Fadmin", None),
    ("/public/..%5cadmin", None),
    ("/public/..%5Cadmin", None),
    ("/public/..\\admin", None),
    ("/public\\..\\admin", None),
    # invalid and overlong escapes, NUL, servlet path parameters, fragments
    ("/public/%zz/../admin", None),
    ("/public/%", None),
    ("/public/%C0%AE%C0%AE/admin", None),
    ("/public/%c0%ae./admin", None),
    ("/admin%00", None),
    ("/public/..;/admin", None),
    ("/public/#/../admin", None),
    # the query is never touched
    ("/public/x?next=/../admin&y=%2e%2E", "/public/x?next=/../admin&y=%2e%2E"),
]


@dataclass
class Answer:
    status: int
    error: str | None  # tulle-proxy-error
    seen: dict[str, Any] | None  # the app's report, when the app answered


class World:
    def __init__(self, group: ProcessGroup, tmp: Path) -> None:
        issuer = tmp / "issuer"
        subprocess.run(
            [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
             "--trust-domain", TD],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        app = group.start("whoami", [sys.executable, str(APP)])
        listening = app.wait_for_match(re.compile(r"listening (\d+)"), "the app's listening line")
        self.app_port = int(listening.group(1))
        path = tmp / "mesh.yaml"
        path.write_text("services: []\n")
        control = start_control(group, path)

        def proxy(name: str, identity: str, *extra: str, app_addr: str | None = None) -> Proxy:
            return start_proxy(
                group,
                app_addr=app_addr,
                extra=["--control-addr", control.grpc_addr, "--identity", identity,
                       "--identity-issuer-dir", str(issuer), *extra],
                name=name,
            )  # fmt: skip

        app_addr = f"{LOOPBACK}:{self.app_port}"
        self.books = proxy("books", BOOKS, "--workload", "books", app_addr=app_addr)
        self.web = proxy("web", WEB)
        self.other = proxy("other", OTHER)
        endpoint = f"{{address: '{LOOPBACK}:{self.books.inbound_port}', identity: '{BOOKS}'}}"
        write_manifest(
            path,
            f"services:\n  - name: books\n    endpoints: [{endpoint}]\n"
            + POLICY.replace("APP_PORT", str(self.app_port)),
        )
        wait_until(
            lambda: (
                self.h1("plain", "/public/ready").status == 200
                and self.h1("web", "/admin/ready").status == 200
            ),
            20,
            "the policy and books' endpoint to reach the proxies",
        )

    def port_for(self, caller: str) -> int:
        """Plaintext callers dial books' inbound; the others their own outbound."""
        if caller == "plain":
            return self.books.inbound_port
        return int(getattr(self, caller).outbound_port)

    # -- HTTP/1, exact bytes ---------------------------------------------------
    def h1(self, caller: str, target: str, extra: bytes = b"", body: bytes = b"") -> Answer:
        request = f"GET {target} HTTP/1.1\r\nHost: books\r\n".encode("latin-1") + extra
        if body:
            request = request.replace(b"GET ", b"POST ", 1)
        with RawHttpConnection(LOOPBACK, self.port_for(caller), timeout=10) as connection:
            connection.send(request + b"\r\n" + body)
            response = connection.read_response()
        seen = json.loads(response.body) if response.status == 200 else None
        return Answer(response.status, response.proxy_error, seen)

    # -- HTTP/2 (prior knowledge), exact :path -----------------------------------
    def h2(
        self,
        caller: str,
        path: str,
        headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
        trailers: list[tuple[bytes, bytes]] | None = None,
        grpc: bool = False,
    ) -> Answer:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        request = [
            (b":method", b"POST" if trailers is not None or grpc else b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"books"),
            (b":path", path.encode("latin-1")),
            *headers,
        ]
        if grpc:
            request += [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
        ends = trailers is None and not grpc
        conn.send_headers(1, request, end_stream=ends)
        if grpc:
            conn.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=trailers is None)
        if trailers is not None:
            if not grpc:
                conn.send_data(1, b"body")
            conn.send_headers(1, trailers, end_stream=True)
        status, error, body, ended = 0, None, b"", False
        with socket.create_connection((LOOPBACK, self.port_for(caller)), timeout=10) as sock:
            sock.sendall(conn.data_to_send())
            deadline = time.monotonic() + 10
            while not ended and time.monotonic() < deadline:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                        fields = dict(event.headers)
                        status = int(fields[b":status"])
                        raw_error = fields.get(b"tulle-proxy-error")
                        error = raw_error.decode() if raw_error else None
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        ended = ended or event.stream_id == 1
                sock.sendall(conn.data_to_send())
        assert ended, f"no complete answer for {path!r} from {caller}"
        if grpc and body:
            body = body[5:]
        seen = json.loads(body) if status == 200 and body else None
        return Answer(status, error, seen)


@pytest.fixture(scope="module")
def world(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(module_processes, tmp_path_factory.mktemp("path-identity"))


def _app_view(path: str) -> str:
    """What a lenient app could make of a path: every escape decoded, `\\` as `/`,
    slashes merged, dot segments resolved. Used to prove `/admin` was not reached."""
    decoded = unquote_to_bytes(path.split("?", 1)[0]).replace(b"\\", b"/")
    kept: list[bytes] = []
    for segment in decoded.split(b"/"):
        if segment in (b"", b"."):
            continue
        if segment.split(b";")[0] == b"..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    return "/" + "/".join(s.decode("latin-1") for s in kept)


def check(caller: str, sent: str, expected: str | None, answer: Answer) -> None:
    where = f"{caller} sent {sent!r}"
    if answer.seen is not None and caller != "web":
        # Whatever else happens: no caller but web ever gets /admin served.
        assert not _app_view(answer.seen["path"]).startswith("/admin"), (where, answer)
    if expected is None:
        assert answer.status == 400, (where, answer)
        assert answer.error == "bad-path", (where, answer)
        return
    allowed = expected.startswith("/public") or caller == "web"
    if not allowed:
        assert answer.status == 403 and answer.error == "unauthorized", (where, answer)
        return
    assert answer.status == 200, (where, answer)
    assert answer.seen is not None and answer.seen["path"] == expected, (where, answer)


CALLERS = ["plain", "other", "web"]


@pytest.mark.parametrize("caller", CALLERS)
def test_http1_path_variants(world: World, caller: str) -> None:
    for sent, expected in VARIANTS:
        check(caller, sent, expected, world.h1(caller, sent))


@pytest.mark.parametrize("caller", CALLERS)
def test_http2_path_variants(world: World, caller: str) -> None:
    for sent, expected in VARIANTS:
        check(caller, sent, expected, world.h2(caller, sent))


def test_absolute_form_on_the_inbound_is_authorized_by_its_path(world: World) -> None:
    # RFC 9112 3.2.2: a server accepts absolute-form, and the app serves its path.
    answer = world.h1("plain", "http://books/public/../admin")
    assert answer.status == 403 and answer.error == "unauthorized", answer
    answer = world.h1("plain", "http://books/public/./x?y")
    assert answer.status == 200 and answer.seen is not None, answer
    assert answer.seen["path"] == "/public/x?y"


# -- item 5: the app sees the verified identity or none -----------------------------

FORGED = WEB.encode()


def test_plaintext_h2c_caller_cannot_claim_an_identity(world: World) -> None:
    answer = world.h2(
        "plain",
        "/public/who",
        headers=[(b"tulle-client-id", FORGED), (b"x-other", b"1"), (b"tulle-client-id", b"x")],
        trailers=[(b"tulle-client-id", FORGED), (b"x-checksum", b"1")],
    )
    assert answer.status == 200 and answer.seen is not None, answer
    assert answer.seen["client_ids"] == [] and answer.seen["trailer_client_ids"] == []


def test_plaintext_grpc_caller_cannot_claim_an_identity(world: World) -> None:
    import grpc

    channel = grpc.insecure_channel(f"{LOOPBACK}:{world.books.inbound_port}")
    try:
        call = channel.unary_unary("/public/Who")
        reply = call(b"", metadata=[("tulle-client-id", WEB)], timeout=10)
    finally:
        channel.close()
    seen = json.loads(reply)
    assert seen["client_ids"] == [] and seen["path"] == "/public/Who"


def test_grpc_over_mtls_carries_the_verified_identity_only(world: World) -> None:
    answer = world.h2("other", "/public/Who", headers=[(b"tulle-client-id", FORGED)], grpc=True)
    assert answer.status == 200 and answer.seen is not None, answer
    assert answer.seen["client_ids"] == [OTHER]


def test_h2_over_mtls_carries_the_verified_identity_only(world: World) -> None:
    answer = world.h2(
        "other",
        "/public/who",
        headers=[(b"tulle-client-id", FORGED)],
        trailers=[(b"tulle-client-id", FORGED)],
    )
    assert answer.status == 200 and answer.seen is not None, answer
    assert answer.seen["client_ids"] == [OTHER]
    assert answer.seen["trailer_client_ids"] == []


def test_http1_chunked_trailers_cannot_claim_an_identity(world: World) -> None:
    chunked = b"Transfer-Encoding: chunked\r\n"
    body = b"4\r\nbody\r\n0\r\nTulle-Client-Id: " + FORGED + b"\r\nTULLE-CLIENT-ID: x\r\n\r\n"
    for caller, expected in (("plain", []), ("other", [OTHER])):
        answer = world.h1(caller, "/public/who", b"tulle-client-id: x\r\n" + chunked, body)
        assert answer.status == 200 and answer.seen is not None, (caller, answer)
        assert answer.seen["client_ids"] == expected, (caller, answer)
        assert answer.seen["trailer_client_ids"] == [], (caller, answer)
