"""Startup ordering: a proxy holds connections until it has its first certificate.

An app that starts with its proxy connects before the control plane has
answered the proxy's CSR. Here the control plane is not even running when
the app calls: the proxy must hold the call (not refuse it, not answer 503)
and serve it over mTLS once the control plane comes up and certifies it;
and, when no certificate comes, give the usual clear 503 after its bound.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.mesh import CONTROL_READY, Backend, Proxy, proxy_args, start_backend, start_proxy
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup, accepts_connections, http_status

from tulle.identity.store import BUNDLE_FILE, IssuerDirectory
from tulle.identity.tokens import make_token

pytestmark = pytest.mark.integration

TRUST_DOMAIN = "cluster.local"
WEB = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"
BOOKS = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/books"


def call(proxy_port: int, url: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """GET through the proxy: status, tulle-proxy-error, body (status 0: a connection error)."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{LOOPBACK}:{proxy_port}"})
    )
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, "", response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("tulle-proxy-error", ""), ""
    except OSError as exc:
        return 0, repr(exc), ""


@pytest.fixture
def issuer(tmp_path: Path) -> IssuerDirectory:
    directory = IssuerDirectory(tmp_path / "issuer")
    directory.init(TRUST_DOMAIN, now=time.time())
    return directory


def books_behind_mtls(processes: ProcessGroup, issuer: IssuerDirectory) -> tuple[Backend, Proxy]:
    backend = start_backend(processes)
    books = start_proxy(
        processes,
        app_addr=backend.addr,
        extra=["--identity", BOOKS, "--identity-issuer-dir", str(issuer.path)],
        name="books-proxy",
    )
    return backend, books


def start_unready_web_proxy(
    processes: ProcessGroup,
    issuer: IssuerDirectory,
    books: Proxy,
    identity_port: int,
    extra: tuple[str, ...] = (),
) -> Proxy:
    """A proxy whose certificate must come from a control plane on `identity_port`."""
    inbound, outbound, admin = free_ports(3)
    token = make_token(issuer.token_secret(), WEB, now=time.time(), ttl_s=600)
    args = proxy_args(
        inbound,
        outbound,
        admin,
        static_dst={"books": [f"{LOOPBACK}:{books.inbound_port}@{BOOKS}"]},
        extra=[
            "--identity",
            WEB,
            "--identity-token",
            token,
            "--identity-addr",
            f"{LOOPBACK}:{identity_port}",
            "--trust-anchors",
            str(issuer.file(BUNDLE_FILE)),
            *extra,
        ],
    )
    process = processes.tulle("web-proxy", args)
    proxy = Proxy(process, inbound, outbound, admin)
    process.wait_for(lambda: accepts_connections(LOOPBACK, outbound), "the outbound listening")
    process.wait_for(lambda: http_status(LOOPBACK, admin, "/ready") == 503, "admin: not ready")
    return proxy


def test_a_call_made_before_the_certificate_is_held_then_served_over_mtls(
    processes: ProcessGroup, issuer: IssuerDirectory, tmp_path: Path
) -> None:
    _, books = books_behind_mtls(processes, issuer)
    (grpc_port,) = free_ports(1)
    web = start_unready_web_proxy(processes, issuer, books, grpc_port)

    # The app calls at once, while no control plane runs at all.
    result: list[tuple[int, str, str]] = []
    app = threading.Thread(target=lambda: result.append(call(web.outbound_port, "http://books/")))
    app.start()
    web.process.wait_for(
        lambda: web.metrics().total("identity_held_connections_total") >= 1,
        "the call held",
        timeout=30,
    )
    assert not result, "answered before the proxy had a certificate"

    # The control plane comes up late, and certifies the proxy.
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text("services: []\n")
    control = processes.tulle(
        "control",
        ["control", "--manifest", str(manifest), "--grpc-addr", f"{LOOPBACK}:{grpc_port}",
         "--admin-addr", f"{LOOPBACK}:0", "--http-addr", "off",
         "--identity-dir", str(issuer.path)],
    )  # fmt: skip
    control.wait_for_match(CONTROL_READY, "the ready line")
    app.join(timeout=90)
    assert not app.is_alive()
    status, error, body = result[0]
    assert (status, error) == (200, ""), result
    assert body
    # Served over mTLS: the books proxy saw the web proxy's identity.
    assert books.metrics().total("request_total", direction="inbound", client_id=WEB) >= 1, (
        books.metrics_text()
    )
    assert web.metrics().total("identity_held_timeout_total") == 0


def test_without_a_certificate_a_held_call_gets_the_clear_error_after_the_bound(
    processes: ProcessGroup, issuer: IssuerDirectory
) -> None:
    _, books = books_behind_mtls(processes, issuer)
    (nothing,) = free_ports(1)  # no control plane ever listens here
    web = start_unready_web_proxy(
        processes, issuer, books, nothing, extra=("--identity-wait", "1.5")
    )
    started = time.monotonic()
    status, error, _ = call(web.outbound_port, "http://books/")
    waited = time.monotonic() - started
    assert (status, error) == (503, "identity-not-ready")
    assert waited >= 1.4
    metrics = web.metrics()
    assert metrics.total("identity_held_connections_total") == 1
    assert metrics.total("identity_held_timeout_total") == 1
    assert web.process.alive()
