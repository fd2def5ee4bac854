"""`--workers 2`: several processes share the listeners (SO_REUSEPORT), both
serve, and one /metrics reports the sum of them all."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup, descendants
from support.rawhttp import RawHttpConnection, request_bytes

pytestmark = pytest.mark.integration

CLIENTS = 20
REQUESTS_PER_CLIENT = 100
# A worker that served a share of the requests made at least this many reads.
MIN_READS_PER_BUSY_WORKER = 100


def _read_syscalls(pid: int) -> int:
    """read(2)-family calls made by a process so far (/proc/<pid>/io syscr).

    Counting reads, not CPU time: a worker serving a thousand small requests
    may use less CPU than one clock tick shows reliably."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


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
    before = {pid: _read_syscalls(pid) for pid in family}
    failures: list[str] = []
    clients = [
        threading.Thread(target=_drive, args=(proxy, failures), daemon=True) for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert not failures, failures[:5]
    reads = {pid: _read_syscalls(pid) - before[pid] for pid in family}
    busy = [pid for pid, count in reads.items() if count >= MIN_READS_PER_BUSY_WORKER]
    assert len(busy) >= 2, f"only {busy} did work (reads per process: {reads})"
    metrics = proxy.metrics()
    sent = CLIENTS * REQUESTS_PER_CLIENT
    assert metrics.total("request_total", direction="outbound") == sent
    assert metrics.total("response_total", direction="outbound", status_code="200") == sent
