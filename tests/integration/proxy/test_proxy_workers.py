"""`--workers 2`: several processes share the listeners (SO_REUSEPORT), both
serve, and one /metrics reports the sum of them all."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup, descendants
from support.rawhttp import RawHttpConnection, request_bytes

pytestmark = pytest.mark.integration

CLIENTS = 20
REQUESTS_PER_CLIENT = 100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _drive(proxy: Proxy, failures: list[str]) -> None:
    try:
        with RawHttpConnection(*proxy.outbound, timeout=10) as connection:
            for _ in range(REQUESTS_PER_CLIENT):
                connection.send(request_bytes("GET", "/", "books"))
                response = connection.read_response()
                if response.status != 200 or response.body != b"Hello, Tulle\n":
                    failures.append(f"{response.status} {response.body[:80]!r}")
    except Exception as error:  # collected and asserted on the test's thread
        failures.append(repr(error))


def test_two_workers_both_serve_and_metrics_sum(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    proxy = start_proxy(
        processes, static_dst={"books": [http_backend.addr]}, extra=["--workers", "2"]
    )
    family = [proxy.pid, *descendants(proxy.pid)]
    assert len(family) >= 2, f"--workers 2 started only {family}"
    before = {pid: _cpu_ticks(pid) for pid in family}
    failures: list[str] = []
    clients = [
        threading.Thread(target=_drive, args=(proxy, failures), daemon=True) for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert not failures, failures[:5]
    busy = [pid for pid in family if _cpu_ticks(pid) - before[pid] >= CLOCK_TICKS // 20]
    assert len(busy) >= 2, f"only {busy} of {family} did work"
    metrics = proxy.metrics()
    sent = CLIENTS * REQUESTS_PER_CLIENT
    assert metrics.total("request_total", direction="outbound") == sent
    assert metrics.total("response_total", direction="outbound", status_code="200") == sent
