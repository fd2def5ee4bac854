"""`tulle routes` shows the inbound rate limits that protect a service, and what they refused.

Processes: the demo backend, books-0's `tulle proxy` following the control
plane's inbound policy, web-0's proxy, and `tulle control` with its metrics
API (viz_mesh.py). The manifest's policy limits books' server (a generous
total, never reached) and its policy route `status` (two requests per caller,
refilling once in 100 s); web-0 then calls /status past it. The profile
route `slow` gets no traffic and is listed all the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.mesh import Backend
from support.process import ProcessGroup
from viz_mesh import Mesh, eventually, start_mesh

pytestmark = pytest.mark.integration

BURST = 2
SENT = 5


def _policy(app_port: int) -> str:
    return (
        "policy:\n"
        "  servers:\n"
        f"    - {{name: books-http, workload: books, port: {app_port},"
        " defaultPolicy: all-unauthenticated}\n"
        "  httpRoutes:\n"
        "    - {name: status, server: books-http,"
        " matches: [{path: {type: PathPrefix, value: /status}}]}\n"
        "  rateLimits:\n"
        "    - name: books-total\n"
        "      target: {server: books-http}\n"
        "      total: {requestsPerSecond: 1000, burst: 1000}\n"
        "    - name: status-per-caller\n"
        "      target: {httpRoute: status}\n"
        f"      identity: {{requestsPerSecond: 0.01, burst: {BURST}}}\n"
    )


@pytest.fixture(scope="module")
def mesh(
    module_processes: ProcessGroup, http_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("viz-inbound-limits")
    mesh = start_mesh(module_processes, http_backend, directory, _policy(http_backend.port))
    # Not /status: the warm-up must leave the route's bucket full. A 200
    # means books-0 has its policy (until then it is fail-closed).
    eventually(lambda: mesh.get("/headers") == 200, "books reachable through web-0", 60.0)
    eventually(lambda: _scraped_twice_each(mesh), "both proxies scraped", 60.0)
    yield mesh


def _scraped_twice_each(mesh: Mesh) -> bool:
    targets = mesh.api("/api/targets")["targets"]
    return len(targets) == 2 and all(t.get("scrapes_ok", 0) >= 2 for t in targets)


def test_routes_show_inbound_limits_and_their_refusals(mesh: Mesh) -> None:
    statuses = [mesh.get("/status/200") for _ in range(SENT)]
    assert statuses == [200] * BURST + [429] * (SENT - BURST), statuses

    seen: list[Any] = [None]

    def counted() -> dict[str, Any] | None:
        document = seen[0] = mesh.cli_json("routes", "books")
        limits = {limit["name"]: limit for limit in document["inbound_limits"]}
        per_caller = limits.get("status-per-caller", {})
        if per_caller.get("limited", 0) < SENT - BURST:
            return None
        return document

    try:
        document = eventually(counted, "the inbound refusals in tulle routes", 30.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last document: {seen[0]}") from None
    limits = {limit["name"]: limit for limit in document["inbound_limits"]}
    assert limits["status-per-caller"] == {
        "name": "status-per-caller",
        "target": "httpRoute status",
        "server": "books-http",
        "route": "status",
        "total": "",
        "per_caller": f"0.01/s burst {BURST}",
        "allowed": BURST,
        "limited": SENT - BURST,
    }
    total = limits["books-total"]
    assert total["target"] == "server books-http" and total["total"] == "1000/s burst 1000"
    # Every /status request that passed its own limit was asked here too.
    assert total["limited"] == 0 and total["allowed"] >= BURST
    rows = {row["route"]: row for row in document["rows"]}
    # The policy route shares its name with the profile route: counted on its row.
    assert rows["status"]["rate_limited_inbound"] == SENT - BURST
    assert rows["status"]["rate_limited_outbound"] == 0
    assert rows["status"]["rate_limited"] == SENT - BURST
    assert rows["status"]["faults_injected"] == 0
    # A configured route nobody called: listed with zero counts.
    assert rows["slow"]["requests"] == 0 and rows["slow"]["rate_limited"] == 0

    table = mesh.cli("routes", "books")
    assert table.returncode == 0, table.stderr
    assert "inbound rate limits" in table.stdout
    line = next(x for x in table.stdout.splitlines() if "status-per-caller" in x)
    assert line.split()[-2:] == [str(BURST), str(SENT - BURST)], line
    slow = next(x for x in table.stdout.splitlines() if x.strip().startswith("slow"))
    assert slow.split()[1] == "0", slow

    # The dashboard's API (what its service page reads) carries the same.
    api = mesh.api("/api/routes?service=books")
    assert {limit["name"]: limit["limited"] for limit in api["inbound_limits"]} == {
        "books-total": 0,
        "status-per-caller": SENT - BURST,
    }
