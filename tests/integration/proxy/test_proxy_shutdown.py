"""Graceful drain on `POST /shutdown` and SIGTERM: stop accepting, let in-flight
requests finish, exit 0."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection, RawResponse, request_bytes

from tulle.core.credentials import ensure_token_file

pytestmark = pytest.mark.integration

EXIT_TIMEOUT_S = 10.0


def _post_shutdown(proxy: Proxy, token: str) -> None:
    request = urllib.request.Request(
        f"{proxy.admin_url}/shutdown",
        method="POST",
        data=b"",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert 200 <= response.status < 300


def _sigterm(proxy: Proxy, token: str) -> None:
    proxy.process.signal(signal.SIGTERM)


def _refuses_connections(addr: tuple[str, int], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(addr, timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("trigger", [_post_shutdown, _sigterm], ids=["post-shutdown", "sigterm"])
def test_drain_finishes_in_flight_request_then_exits_zero(
    processes: ProcessGroup,
    http_backend: Backend,
    trigger: Callable[[Proxy, str], None],
    tmp_path: Path,
) -> None:
    token = ensure_token_file(tmp_path / "admin-token")
    proxy = start_proxy(
        processes,
        app_addr=http_backend.addr,
        static_dst={"books": [http_backend.addr]},
        extra=["--admin-token-file", str(tmp_path / "admin-token")],
    )
    results: list[RawResponse | BaseException] = []

    def slow_request() -> None:
        try:
            with RawHttpConnection(*proxy.outbound, timeout=10) as connection:
                connection.send(request_bytes("GET", "/delay/1500", "books"))
                results.append(connection.read_response())
        except BaseException as error:  # handed to the test thread below
            results.append(error)

    worker = threading.Thread(target=slow_request, daemon=True)
    worker.start()
    # Let the request reach the backend before the drain starts.
    time.sleep(0.4)
    trigger(proxy, token)
    assert _refuses_connections(proxy.outbound), "outbound still accepts while draining"
    worker.join(timeout=10)
    assert results, "the in-flight request got no answer"
    outcome = results[0]
    assert isinstance(outcome, RawResponse), repr(outcome)
    assert outcome.status == 200
    assert outcome.body == b"delayed 1500 ms\n"
    assert proxy.process.wait_exit(EXIT_TIMEOUT_S) == 0, proxy.process.describe()


def test_idle_proxy_exits_promptly_on_sigterm(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    proxy = start_proxy(processes, app_addr=http_backend.addr)
    # An idle keep-alive client connection must not hold the drain open.
    with RawHttpConnection(*proxy.inbound) as connection:
        connection.send(request_bytes("GET", "/", "app"))
        assert connection.read_response().status == 200
        started = time.monotonic()
        proxy.process.signal(signal.SIGTERM)
        assert proxy.process.wait_exit(EXIT_TIMEOUT_S) == 0
    assert time.monotonic() - started < 5.0
