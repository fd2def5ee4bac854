"""`tulle routes` shows what the manifest injects into a route and what it did.

Processes: the demo backend, two real `tulle proxy` hops and `tulle control`
with its metrics API (viz_mesh.py); the manifest gains a route with a fault
and one with an outbound rate limit and a mirror, and real requests meet them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.mesh import Backend
from support.process import ProcessGroup
from viz_mesh import Mesh, eventually, manifest_text, start_mesh

pytestmark = pytest.mark.integration

FAULTED = 5
COPIED = 4
LIMITED_SENT = 6
BURST = 2

EXTRA_ROUTES = (
    "      - name: chaos\n"
    "        matches: [{path: {value: /chaos}}]\n"
    "        fault:\n"
    "          abort: {status: 503, percent: 100}\n"
    "          delay: {duration: 20ms, percent: 50}\n"
    "      - name: capped\n"
    "        matches: [{path: {value: /capped}}]\n"
    f"        rateLimit: {{requestsPerSecond: 0.01, burst: {BURST}}}\n"
    "        mirror: {service: books, percent: 50}\n"
    "      - name: copied\n"
    "        matches: [{path: {value: /copied}}]\n"
    "        mirror: {service: books}\n"
)


@pytest.fixture(scope="module")
def mesh(
    module_processes: ProcessGroup, http_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    mesh = start_mesh(module_processes, http_backend, tmp_path_factory.mktemp("viz-inject"))
    # A proxy's first scrape is its baseline: requests before it are not counted.
    eventually(lambda: _scraped_twice(mesh), "both proxies scraped", 60.0)
    mesh.manifest.write_text(manifest_text(mesh.books.inbound_port) + EXTRA_ROUTES)
    # web-0's proxy has the new routes once the chaos route's fault answers.
    eventually(lambda: mesh.get("/chaos") == 503, "the chaos route's fault in web-0", 60.0)
    yield mesh


def _scraped_twice(mesh: Mesh) -> bool:
    targets = mesh.api("/api/targets")["targets"]
    return len(targets) == 2 and all(t.get("scrapes_ok", 0) >= 2 for t in targets)


def _rows(mesh: Mesh) -> dict[str, Any]:
    return {row["route"]: row for row in mesh.cli_json("routes", "books")["rows"]}


def test_routes_show_faults_limits_and_mirrors(mesh: Mesh) -> None:
    for _ in range(FAULTED):
        assert mesh.get("/chaos") == 503
    for _ in range(COPIED):
        assert mesh.get("/copied") == 404  # the backend has no /copied: still a copy
    statuses = [mesh.get("/capped") for _ in range(LIMITED_SENT)]
    assert statuses.count(429) == LIMITED_SENT - BURST, statuses

    seen: list[dict[str, Any]] = [{}]

    def counted() -> dict[str, Any] | None:
        rows = seen[0] = _rows(mesh)
        chaos, capped = rows.get("chaos"), rows.get("capped")
        if chaos is None or capped is None:
            return None
        if chaos["faults_injected"] < FAULTED + 1 or capped["rate_limited"] < LIMITED_SENT - BURST:
            return None
        if rows.get("copied", {}).get("mirrored", 0) < COPIED:
            return None
        return rows

    try:
        rows = eventually(counted, "the faults and limits in tulle routes", 30.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last rows: {seen[0]}") from None
    # The warm-up's 503s count too: every chaos request was aborted.
    assert rows["chaos"]["faults_injected"] == rows["chaos"]["requests"]
    assert rows["chaos"]["fault"] == "abort 100% 503; delay 50% 20ms"
    assert rows["chaos"]["mirror"] == rows["chaos"]["rate_limit"] == ""
    assert rows["capped"]["rate_limited"] == LIMITED_SENT - BURST
    assert rows["capped"]["rate_limit"] == f"0.01/s burst {BURST}"
    assert rows["capped"]["mirror"] == "books 50%"
    assert rows["copied"]["mirrored"] == COPIED and rows["chaos"]["mirrored"] == 0
    assert rows["capped"]["fault"] == "" and rows["capped"]["faults_injected"] == 0

    table = mesh.cli("routes", "books")
    assert table.returncode == 0, table.stderr
    assert "FAULTED" in table.stdout and "LIMITED" in table.stdout
    assert "chaos: fault: abort 100% 503; delay 50% 20ms" in table.stdout
    assert f"capped: limit: 0.01/s burst {BURST}" in table.stdout
    assert "capped: mirror: books 50%" in table.stdout
    assert "MIRRORED" in table.stdout
