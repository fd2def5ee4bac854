"""A proxy running short of file descriptors sheds new connections, keeps its
admin listener and its life, and recovers once descriptors are free again.

The proxy runs under `ulimit -n 128`; the test holds more keep-alive client
connections open than that allows.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, proxy_args, wait_ready
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup, http_status
from support.rawhttp import ConnectionClosed, RawHttpConnection, request_bytes

pytestmark = pytest.mark.integration

FD_LIMIT = 128
CLIENTS = 160
RECOVERY_TIMEOUT_S = 20.0
# A proxy that cannot take a connection closes it; one that leaves it waiting
# in the backlog makes the client wait this long (a slow answer on a busy
# machine stays well within it).
CLIENT_TIMEOUT_S = 10.0


@pytest.fixture
def starved_proxy(processes: ProcessGroup, http_backend: Backend) -> Proxy:
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(inbound, outbound, admin, http_backend.addr, {"books": [http_backend.addr]})
    # exec keeps the pid, so the group stops the proxy itself.
    command = f"ulimit -n {FD_LIMIT} && exec {sys.executable} -m tulle " + " ".join(args)
    process = processes.start("proxy-starved", ["sh", "-c", command])
    return wait_ready(Proxy(process, inbound, outbound, admin))


def served(connection: RawHttpConnection) -> str:
    """One keep-alive request on `connection`: "served" (200), "shed" (closed
    by the proxy) or "hung" (no answer within the client's timeout)."""
    try:
        connection.send(request_bytes("GET", "/", "books"))
        return "served" if connection.read_response().status == 200 else "refused"
    except TimeoutError:
        return "hung"
    except (ConnectionClosed, OSError):
        return "shed"


@contextlib.contextmanager
def held_connections(proxy: Proxy, count: int) -> Iterator[dict[str, int]]:
    """Open `count` keep-alive connections, one request each, and keep them open;
    yields how many were served, shed or left hanging."""
    open_connections: list[RawHttpConnection] = []
    outcomes = {"served": 0, "shed": 0, "hung": 0, "refused": 0}
    try:
        for _ in range(count):
            try:
                connection = RawHttpConnection(*proxy.outbound, timeout=CLIENT_TIMEOUT_S)
            except OSError:
                outcomes["shed"] += 1
                continue
            open_connections.append(connection)
            outcomes[served(connection)] += 1
        yield outcomes
    finally:
        for connection in open_connections:
            connection.close()


def test_running_out_of_descriptors_sheds_and_recovers(starved_proxy: Proxy) -> None:
    proxy = starved_proxy
    with held_connections(proxy, CLIENTS) as outcomes:
        # Some were served; the rest were shed at once, none left hanging.
        assert outcomes["served"] >= 20, outcomes
        assert outcomes["shed"] > 0, outcomes
        assert outcomes["hung"] == outcomes["refused"] == 0, outcomes
        # Admin still answers, and says the process is live.
        assert http_status(LOOPBACK, proxy.admin_port, "/live", timeout=5.0) == 200
        metrics = proxy.metrics()
        assert metrics.total("accept_shed_total", direction="outbound") > 0
        assert proxy.process.alive()
    # Descriptors free again: new connections are served.
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    recovered = False
    while time.monotonic() < deadline and not recovered:
        with contextlib.suppress(OSError), RawHttpConnection(*proxy.outbound) as connection:
            recovered = served(connection) == "served"
        if not recovered:
            time.sleep(0.2)
    assert recovered
    # Then a whole batch again, every one served.
    with held_connections(proxy, 10) as outcomes:
        assert outcomes["served"] == 10, outcomes
    # One warning per interval, not one per shed connection.
    assert proxy.process.output().count("out of file descriptors") <= 3


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(child) for child in text]
    return out


def live_status(proxy: Proxy) -> tuple[int, str]:
    connection = http.client.HTTPConnection(LOOPBACK, proxy.admin_port, timeout=15)
    try:
        connection.request("GET", "/live")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_live_reports_a_stalled_worker(processes: ProcessGroup, http_backend: Backend) -> None:
    """A worker whose event loop does not run (stopped here) makes /live answer 503,
    so a supervisor can restart the proxy; it is live again once the worker runs."""
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(inbound, outbound, admin, http_backend.addr, {"books": [http_backend.addr]})
    process = processes.tulle("proxy-workers", [*args, "--workers", "2"])
    proxy = wait_ready(Proxy(process, inbound, outbound, admin))
    assert live_status(proxy)[0] == 200
    workers = children(proxy.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGSTOP)
    try:
        status, body = live_status(proxy)
        assert status == 503, body
        assert "did not answer" in body
    finally:
        os.kill(workers[0], signal.SIGCONT)
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline and live_status(proxy)[0] != 200:
        time.sleep(0.2)
    assert live_status(proxy)[0] == 200
