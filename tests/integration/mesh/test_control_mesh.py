"""The mesh under load: a real control plane, real proxies, real backends.

Each test starts `tulle control` on a manifest, a client-side proxy resolving
through it (`--control-addr`), named backends, and threads of clients; then
changes the world (edits the manifest, kills an endpoint, slows one, stops the
control plane) and checks what clients saw.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from meshkit import Load, NamedBackend, named_backend, start_control, wait_until, write_manifest
from support.mesh import Proxy, start_proxy
from support.ports import free_port
from support.process import ProcessGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def manifest(
    endpoints: list[NamedBackend] | list[str],
    *,
    retryable: bool = True,
    timeout: str = "2s",
    extra: str = "",
) -> str:
    addrs = [e.addr if isinstance(e, NamedBackend) else e for e in endpoints]
    eps = ", ".join(addrs)
    return (
        "services:\n"
        "  - name: books\n"
        f"    endpoints: [{eps}]\n"
        "    routes:\n"
        "      - name: all\n"
        "        matches: [{path: {value: /}}]\n"
        f"        timeout: {timeout}\n"
        f"        retryable: {'true' if retryable else 'false'}\n"
        f"{extra}"
    )


def client_proxy(group: ProcessGroup, control_addr: str) -> Proxy:
    return start_proxy(group, extra=["--control-addr", control_addr], name="client-proxy")


def test_endpoints_change_under_load_without_errors(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    a, b, c = (named_backend(processes, n) for n in ("a", "b", "c"))
    path = tmp_path / "mesh.yaml"
    write_manifest(path, manifest([a, b]))
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    with Load("http://books/", proxy.outbound_url) as load:
        wait_until(lambda: load.total > 50, 20, "first requests")
        write_manifest(path, manifest([b, c]))  # a leaves, c joins
        wait_until(lambda: load.snapshot()["c"] > 20, 10, "c to take traffic")
        seen_a = load.snapshot()["a"]
        time.sleep(1.0)
        # a is no longer chosen once the change arrived (in-flight ones finished).
        assert load.snapshot()["a"] <= seen_a + 4
        write_manifest(path, manifest([a]))
        wait_until(lambda: load.snapshot()["a"] > seen_a + 20, 10, "a to come back")
    assert load.failures == [], load.failures[:5]
    assert load.total > 200


def test_killed_endpoint_costs_no_failed_request(processes: ProcessGroup, tmp_path: Path) -> None:
    backends = [named_backend(processes, n) for n in ("a", "b", "c")]
    path = tmp_path / "mesh.yaml"
    write_manifest(path, manifest(backends))
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    with Load("http://books/", proxy.outbound_url, threads=6) as load:
        wait_until(lambda: load.total > 100, 20, "first requests")
        backends[0].process.signal(signal.SIGKILL)
        killed_at = load.total
        wait_until(lambda: load.total > killed_at + 600, 30, "600 more requests")
    assert load.failures == [], load.failures[:5]
    metrics = proxy.metrics()
    # The dead endpoint was retried around, then taken out by failure accrual.
    assert metrics.total("retry_total") > 0
    assert metrics.total("endpoints_ejected", dst_service="books") == 1


def test_slow_endpoint_loses_its_share(processes: ProcessGroup, tmp_path: Path) -> None:
    fast = [named_backend(processes, n, delay_ms=5) for n in ("a", "b")]
    slow = named_backend(processes, "slow", delay_ms=50)
    path = tmp_path / "mesh.yaml"
    write_manifest(path, manifest([*fast, slow]))
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    with Load("http://books/", proxy.outbound_url, threads=6) as load:
        time.sleep(5.0)
        at_5s = load.snapshot()
        time.sleep(3.0)
        later = load.snapshot()
    assert load.failures == []
    window = Counter(later)
    window.subtract(at_5s)
    share = window["slow"] / max(1, sum(window.values()))
    assert share < 0.10, (share, window)


def test_control_plane_outage_fails_static(processes: ProcessGroup, tmp_path: Path) -> None:
    a, b = named_backend(processes, "a"), named_backend(processes, "b")
    path = tmp_path / "mesh.yaml"
    write_manifest(path, manifest([a]))
    port = free_port()
    control = start_control(processes, path, grpc_port=port)
    proxy = client_proxy(processes, control.grpc_addr)
    outage_s = float(os.environ.get("TULLE_OUTAGE_SECONDS", "12"))
    with Load("http://books/", proxy.outbound_url) as load:
        wait_until(lambda: load.total > 50, 20, "first requests")
        control.process.signal(signal.SIGKILL)
        control.process.wait_exit(10)
        before = load.total
        time.sleep(outage_s)  # the issue asks for 60 s; TULLE_OUTAGE_SECONDS=60 runs that
        assert load.total > before + 100, "traffic continued from the last known state"
        restarted = start_control(processes, path, grpc_port=port, name="control-restarted")
        write_manifest(path, manifest([b]))
        wait_until(lambda: load.snapshot()["b"] > 20, 20, "the change after the restart")
    assert restarted.grpc_port == port
    assert load.failures == [], load.failures[:5]


def test_weighted_split_is_within_three_percent(processes: ProcessGroup, tmp_path: Path) -> None:
    stable, canary = named_backend(processes, "stable"), named_backend(processes, "canary")
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "services:\n"
        "  - name: books\n"
        "    backends:\n"
        "      - {name: books-stable, weight: 90}\n"
        "      - {name: books-canary, weight: 10}\n"
        "  - name: books-stable\n"
        f"    endpoints: [{stable.addr}]\n"
        "  - name: books-canary\n"
        f"    endpoints: [{canary.addr}]\n"
    )
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.outbound_url}))
    counts: Counter[str] = Counter()
    for _ in range(2000):
        with opener.open("http://books/", timeout=10) as response:
            counts[response.read().decode().strip()] += 1
    assert abs(counts["canary"] / 2000 - 0.10) <= 0.03, counts
    assert counts["stable"] + counts["canary"] == 2000


def test_route_timeout_and_retry_header(processes: ProcessGroup, tmp_path: Path) -> None:
    slow = named_backend(processes, "slow", delay_ms=800)
    path = tmp_path / "mesh.yaml"
    write_manifest(path, manifest([slow], timeout="200ms", retryable=False))
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    import urllib.error

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.outbound_url}))
    started = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open("http://books/", timeout=10)
    assert info.value.code == 504
    assert info.value.headers["tulle-proxy-error"] == "response-timeout"
    assert time.monotonic() - started < 0.7
    assert proxy.metrics().total("timeout_total") >= 1


def test_retryable_route_retries_5xx(processes: ProcessGroup, tmp_path: Path) -> None:
    flaky = named_backend(processes, "flaky")
    path = tmp_path / "mesh.yaml"
    # `flaky` fails every other request to /fail; the route is retryable, so
    # each failed attempt is retried and every client request succeeds.
    write_manifest(path, manifest([flaky]))
    control = start_control(processes, path)
    proxy = client_proxy(processes, control.grpc_addr)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.outbound_url}))
    retried = 0
    for _ in range(40):
        with opener.open("http://books/fail", timeout=10) as response:
            assert response.read() == b"flaky\n"
            retried += int(response.headers.get("tulle-retry-attempts", "0"))
    assert retried == 40  # one failed attempt per request, each retried once
    assert proxy.metrics().total("retry_total") == retried
    # A 5xx on a route that is not retryable goes back to the client as it is.
    write_manifest(path, manifest([flaky], retryable=False))
    time.sleep(1.5)
    statuses = []
    for _ in range(4):
        try:
            with opener.open("http://books/fail", timeout=10) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    assert sorted(statuses) == [200, 200, 500, 500]
