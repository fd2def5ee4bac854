"""The metrics API and the CLI against a real mesh: stat, routes, edges, check, apply, top.

Processes: the demo backend, two real `tulle proxy` hops and `tulle control`
with its metrics API (see viz_mesh.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mesh import Backend
from support.ports import LOOPBACK, free_port
from support.process import ProcessGroup
from viz_mesh import Mesh, eventually, start_mesh

pytestmark = pytest.mark.integration

OK_REQUESTS = 24
FAILED_REQUESTS = 6


@pytest.fixture(scope="module")
def mesh(
    module_processes: ProcessGroup, http_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    yield start_mesh(module_processes, http_backend, tmp_path_factory.mktemp("viz"))


def _scraped_twice(mesh: Mesh) -> bool:
    targets = mesh.api("/api/targets")["targets"]
    return len(targets) == 2 and all(t.get("scrapes_ok", 0) >= 2 for t in targets)


@pytest.fixture(scope="module")
def traffic(mesh: Mesh) -> Mesh:
    eventually(lambda: _scraped_twice(mesh), "both proxies scraped")

    # The outbound side learns `books` (endpoints, then its routes) from the control
    # plane first; the warm-up path matches no route, so it counts under the default.
    # On a loaded machine web-0's proxy may answer some warm-ups itself (discovery
    # still pending): they are web's outbound requests that books never saw.
    def warmed_up() -> bool:
        if mesh.get("/") == 200:
            return True
        mesh.answered_by_web += 1
        return False

    eventually(warmed_up, "books reachable through web-0", 60.0)
    time.sleep(0.5)
    for _ in range(OK_REQUESTS):
        assert mesh.get("/status/201") == 201
    for _ in range(FAILED_REQUESTS):
        assert mesh.get("/status/500") == 500
    return mesh


def _books(mesh: Mesh) -> dict[str, Any] | None:
    rows = mesh.cli_json("stat", "books")["rows"]
    if not rows:
        return None
    codes = rows[0]["status_codes"]
    done = codes.get("201") == OK_REQUESTS and codes.get("500") == FAILED_REQUESTS
    return rows[0] if done else None


def test_stat_shows_count_rate_and_success_rate(traffic: Mesh) -> None:
    row = eventually(lambda: _books(traffic), "books' requests in tulle stat")
    # Beyond the test's requests: the warm-up ones ("/", answered 200).
    warm_up = row["status_codes"].get("200", 0)
    total = OK_REQUESTS + FAILED_REQUESTS + warm_up
    assert row["requests"] == total
    assert row["success_rate"] == pytest.approx((total - FAILED_REQUESTS) / total, abs=1e-4)
    assert row["rps"] > 0
    assert row["source"] == "inbound"
    assert row["latency_ms"]["p50"] is not None
    assert set(row["status_codes"]) <= {"200", "201", "500"}
    table = traffic.cli("stat")
    assert table.returncode == 0, table.stderr
    assert "books" in table.stdout and f"{row['success_rate'] * 100:.2f}%" in table.stdout
    instances = traffic.cli_json("stat", "--kind", "instance")["rows"]
    assert {(r["service"], r["instance"]) for r in instances} == {
        ("books", "books-0"),
        ("web", "web-0"),
    }


def test_routes_split_by_the_manifest_routes(traffic: Mesh) -> None:
    eventually(lambda: _books(traffic), "books' requests in tulle stat")
    rows = {row["route"]: row for row in traffic.cli_json("routes", "books")["rows"]}
    assert rows["status"]["requests"] == OK_REQUESTS + FAILED_REQUESTS
    assert rows["status"]["source"] == "outbound"
    assert "status" in traffic.cli("routes", "books").stdout


def test_edges_show_who_calls_whom(traffic: Mesh) -> None:
    row = eventually(lambda: _books(traffic), "books' requests in tulle stat")
    edges = traffic.cli_json("edges")["rows"]
    assert [(e["src"], e["dst"]) for e in edges] == [("web", "books")]
    # Both sides count the same requests, plus those web's proxy answered itself.
    sent = row["requests"] + traffic.answered_by_web
    assert edges[0]["requests"] == sent, (edges[0], row, traffic.answered_by_web)
    successes = row["success_rate"] * row["requests"]
    assert edges[0]["success_rate"] == pytest.approx(successes / sent, abs=1e-4)


def test_timeseries_and_services(traffic: Mesh) -> None:
    row = eventually(lambda: _books(traffic), "books' requests in tulle stat")
    series = traffic.api("/api/timeseries?service=books&window=60s&step=5s")
    assert len(series["points"]) == 12
    assert sum(p["rps"] * 5 for p in series["points"]) == pytest.approx(row["requests"], abs=0.5)
    services = {s["name"]: s for s in traffic.api("/api/services")["services"]}
    assert services["books"]["routes"] == ["slow", "status"]
    assert services["books"]["instances"][0]["instance"] == "books-0"


def test_check_passes_then_fails_with_a_hint_when_a_proxy_is_down(traffic: Mesh) -> None:
    result = traffic.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "books/books-0 ready" in result.stdout
    original = traffic.targets_file.read_text()
    dead = f"gone=gone-0={LOOPBACK}:{free_port()}\n"
    try:
        traffic.targets_file.write_text(original + dead)
        failed = traffic.cli("check")
        assert failed.returncode == 1
        assert "gone/gone-0 ready" in failed.stdout
        assert "hint:" in failed.stdout
        document = traffic.cli_json_unchecked("check")
        assert document["ok"] is False
    finally:
        traffic.targets_file.write_text(original)


def test_check_without_a_control_plane_fails_with_a_hint() -> None:
    result = Mesh.cli_unbound("check", f"http://{LOOPBACK}:{free_port()}")
    assert result.returncode == 1
    assert "control plane reachable" in result.stdout
    assert "hint:" in result.stdout


def test_apply_changes_a_route_timeout_and_the_proxy_follows(traffic: Mesh, tmp_path: Path) -> None:
    assert traffic.get("/delay/400") == 200
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "services:\n  - name: books\n    routes:\n      - name: slow\n"
        "        matches: [{path: {value: /delay}}]\n        timeout: soon\n"
    )
    refused = traffic.cli("apply", "-f", str(broken))
    assert refused.returncode == 1
    assert f"{broken}:6: services[0].routes[0].timeout" in refused.stderr
    change = tmp_path / "timeout.yaml"
    change.write_text(
        "services:\n  - name: books\n    routes:\n      - name: slow\n"
        "        matches: [{path: {value: /delay}}]\n        timeout: 100ms\n"
    )
    applied = traffic.cli("apply", "-f", str(change))
    assert applied.returncode == 0, applied.stderr
    eventually(lambda: traffic.get("/delay/400") == 504, "504 after the timeout change", 10.0)
    assert traffic.get("/status/200") == 200


def test_top_and_tap_show_live_requests_of_real_proxies(traffic: Mesh) -> None:
    stop = threading.Event()

    def send() -> None:
        # Paced and bounded in time: tap subscribes a moment after this starts.
        deadline = time.monotonic() + 20.0
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                traffic.get("/status/202")
            stop.wait(0.02)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        top = traffic.cli_json("top", "--duration", "2")
        tapped = traffic.cli("tap", "books", "--limit", "3", "--duration", "10")
    finally:
        stop.set()
        sender.join(10)
    assert top["errors"] == []
    busiest = top["rows"][0]
    assert (busiest["method"], busiest["path"], busiest["success_rate"]) == (
        "GET",
        "/status/202",
        1,
    )
    # Both hops saw the requests: web-0 outbound and books-0 inbound.
    assert {row["service"] for row in top["rows"]} == {"web", "books"}
    assert tapped.returncode == 0, tapped.stderr
    lines = tapped.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("inb books/books-0 GET") and "status=202" in line for line in lines)
