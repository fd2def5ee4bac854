"""The proxy admin's `POST /shutdown` and `/tap` need a credential, not just loopback.

Without `--admin-token-file` they are disabled (403, saying how to enable
them); with it they need `Authorization: Bearer TOKEN`, a Host that is an
address or localhost (DNS rebinding) and no foreign Origin (a web page the
operator opened must not be able to stop a sidecar).
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup, http_status

from tulle.core.credentials import ensure_token_file

pytestmark = pytest.mark.integration


def admin_request(
    proxy: Proxy, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*proxy.admin, timeout=5)
    try:
        connection.request(
            method, path, body=b"" if method == "POST" else None, headers=headers or {}
        )
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_without_a_token_shutdown_and_tap_are_disabled(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    proxy = start_proxy(processes, app_addr=http_backend.addr)
    status, body = admin_request(proxy, "POST", "/shutdown")
    assert status == 403
    assert "/shutdown is disabled: start the proxy with --admin-token-file" in body
    assert "TULLE_PROXY_ADMIN_TOKEN_FILE" in body
    status, body = admin_request(proxy, "GET", "/tap?duration=0.1")
    assert status == 403 and "/tap is disabled" in body
    # Still up, still serving.
    assert proxy.process.alive()
    assert http_status(*proxy.admin, "/ready") == 200


@pytest.fixture
def guarded(processes: ProcessGroup, http_backend: Backend, tmp_path: Path) -> tuple[Proxy, str]:
    token = ensure_token_file(tmp_path / "admin-token")
    proxy = start_proxy(
        processes,
        app_addr=http_backend.addr,
        extra=["--admin-token-file", str(tmp_path / "admin-token")],
    )
    return proxy, token


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "/shutdown needs Authorization: Bearer"),
        ({"Authorization": "Bearer not-the-token"}, 401, "needs Authorization"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "needs Authorization"),
        ({"Host": "rebind.attacker.example:4191", "auth": "yes"}, 403, "DNS rebinding"),
        ({"Origin": "http://attacker.example", "auth": "yes"}, 403, "cross-site"),
    ],
    ids=["no-token", "wrong-token", "basic", "foreign-host", "foreign-origin"],
)
def test_shutdown_without_a_valid_credential_is_refused(
    guarded: tuple[Proxy, str], headers: dict[str, str], status: int, message: str
) -> None:
    proxy, token = guarded
    if headers.pop("auth", None):
        headers["Authorization"] = f"Bearer {token}"
    answered, body = admin_request(proxy, "POST", "/shutdown", headers)
    assert (answered, message in body) == (status, True), body
    assert http_status(*proxy.admin, "/ready") == 200
    assert proxy.process.alive()


def test_shutdown_with_the_token_drains_and_exits(guarded: tuple[Proxy, str]) -> None:
    proxy, token = guarded
    own_origin = f"http://127.0.0.1:{proxy.admin_port}"
    status, body = admin_request(
        proxy,
        "POST",
        "/shutdown",
        {"Authorization": f"Bearer {token}", "Origin": own_origin},
    )
    assert (status, body) == (200, "shutting down\n")
    assert proxy.process.wait_exit(10.0) == 0


def test_tap_needs_the_token(guarded: tuple[Proxy, str]) -> None:
    proxy, token = guarded
    status, body = admin_request(proxy, "GET", "/tap?duration=0.1")
    assert status == 401 and "/tap needs Authorization" in body
    status, body = admin_request(
        proxy,
        "GET",
        "/tap?duration=0.1",
        {"Authorization": f"Bearer {token}", "Host": "localhost"},
    )
    assert status == 200
    assert '"end": true' in body
