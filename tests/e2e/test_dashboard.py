"""The dashboard in headless Chromium against a real mesh with traffic flowing.

Processes: the demo backend, two real `tulle proxy` hops (web-0 -> books-0)
and `tulle control` serving the metrics API and the dashboard (the mesh of
tests/integration/viz/viz_mesh.py). A thread sends ~20 requests a second
(one in ten fails). The browser is Debian's /usr/bin/chromium driven by
Playwright; the tests skip, saying why, when it is absent. Screenshots of the
three pages go to $TULLE_DASHBOARD_SCREENSHOTS (else a temporary folder).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _helpers in (
    _TESTS / "integration",
    _TESTS / "integration" / "viz",
    _TESTS / "e2e" / "dashboard",
):
    sys.path.insert(0, str(_helpers))

from dashboard_browser import browser_page, chromium_or_skip  # noqa: E402
from dashboard_traffic import steady_traffic  # noqa: E402
from support.mesh import start_backend  # noqa: E402
from support.ports import LOOPBACK, free_port  # noqa: E402
from support.process import ProcessGroup  # noqa: E402
from viz_mesh import API_TOKENS, Mesh, eventually, start_mesh  # noqa: E402

TAP_ROWS = "document.querySelectorAll('table[data-tap] tbody tr')"

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def _policy(app_port: int, limits: str = "") -> str:
    """books' inbound policy: one open server; `limits` adds httpRoutes and rateLimits."""
    return (
        "policy:\n"
        "  servers:\n"
        f"    - {{name: books-http, workload: books, port: {app_port},"
        " defaultPolicy: all-unauthenticated}\n" + limits
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    group = ProcessGroup()
    try:
        backend = start_backend(group)
        # books-0 follows the control plane's inbound policy (open until the
        # last test adds a limit).
        mesh = start_mesh(
            group, backend, tmp_path_factory.mktemp("dashboard"), _policy(backend.port)
        )
        eventually(lambda: mesh.get("/status/200") == 200, "books reachable through web-0")
        with steady_traffic(mesh.get):
            eventually(
                lambda: (
                    {row["service"] for row in mesh.api("/api/stat")["rows"]} >= {"web", "books"}
                    and mesh.api("/api/edges")["rows"]
                ),
                "both services and the web -> books edge in the API",
                timeout=30,
            )
            yield mesh
    finally:
        group.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go: $TULLE_DASHBOARD_SCREENSHOTS, else a temporary folder.

    The README's pictures come from the demo shop instead (dashboard/take_screenshots.py).
    """
    chosen = os.environ.get("TULLE_DASHBOARD_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")


def _services(mesh: Mesh) -> set[str]:
    return {row["service"] for row in mesh.api("/api/stat")["rows"]}


def _raw_get(
    mesh: Mesh, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = mesh.api_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _cell(page: Any, service: str, column: str) -> str:
    text: str = page.locator(f'tr[data-service="{service}"] td[data-col="{column}"]').inner_text()
    return text


def test_control_plane_serves_the_dashboard_assets(mesh: Mesh) -> None:
    for path in ("/", "/dashboard"):
        status, headers, body = _raw_get(mesh, path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert headers["cache-control"] == "no-cache" and b"/static/app.js?v=" in body
    version = body.split(b"/static/app.js?v=")[1].split(b'"')[0].decode()
    status, headers, script = _raw_get(mesh, f"/static/app.js?v={version}")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert "immutable" in headers["cache-control"] and b"hashchange" in script
    status, headers, _ = _raw_get(mesh, "/static/ui.js")
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert _raw_get(mesh, "/static/ui.js", {"If-None-Match": headers["etag"]})[0] == 304
    status, headers, _ = _raw_get(mesh, "/static/style.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    assert _raw_get(mesh, "/static/../api.py")[0] == 404
    assert _raw_get(mesh, "/static/missing.js")[0] == 404
    # The API is untouched beside it, and lists the dashboard's endpoint.
    assert "/api/overview" in mesh.api("/api")["endpoints"]


def test_overview_endpoint_gives_figures_and_sparklines_for_every_service(mesh: Mesh) -> None:
    # One request in ten fails on purpose; on a busy machine the first failure may
    # not be scraped yet, so wait for it rather than read the first answer.
    def books_row() -> dict[str, Any] | None:
        document = mesh.api("/api/overview?window=60s&spark=2m&step=10s")
        rows = {row["service"]: row for row in document["rows"]}
        books = rows.get("books")
        if "web" in rows and books and books["requests"] > 0 and 0 < books["success_rate"] < 1:
            return books
        return None

    books = eventually(books_row, "books with traffic and failures", timeout=60)
    assert len(books["points"]) >= 1 and set(books["points"][0]) == {
        "ts",
        "rps",
        "success_rate",
        "p99_ms",
    }
    assert mesh.api("/api/overview?step=0.5")["error"].startswith("step must be")


def test_overview_lists_every_service_with_live_numbers(mesh: Mesh, screenshots: Path) -> None:
    chromium_or_skip()
    with browser_page() as page:
        page.goto(f"{mesh.api_url}/")
        for service in ("web", "books"):
            page.wait_for_selector(f'tr[data-service="{service}"]')
        page.wait_for_function(
            "() => { const text = document.querySelector("
            '\'tr[data-service="books"] td[data-col="requests"]\')?.textContent.trim();'
            " return Boolean(text) && text !== '—' && text !== '0'; }"
        )
        first = _cell(page, "books", "requests")
        assert first.replace(",", "").isdigit() and int(first.replace(",", "")) > 0
        assert _cell(page, "books", "success_rate").endswith("%")
        assert _cell(page, "books", "p99").endswith(("ms", " s"))
        # Live: the next polls bring new numbers into the same rows.
        page.wait_for_function(
            "(first) => document.querySelector("
            '\'tr[data-service="books"] td[data-col="requests"]\').textContent !== first',
            arg=first,
            timeout=12_000,
        )
        assert page.locator("tbody tr[data-service]").count() == 2
        # Sortable: by requests, busiest first.
        page.click('th[data-sort="requests"]')
        assert page.get_attribute('th[data-sort="requests"]', "aria-sort") == "descending"
        page.wait_for_timeout(300)
        page.screenshot(path=str(screenshots / "dashboard-overview.png"), full_page=False)


def test_topology_draws_the_edges(mesh: Mesh, screenshots: Path) -> None:
    chromium_or_skip()
    with browser_page() as page:
        page.goto(f"{mesh.api_url}/#/topology")
        page.wait_for_selector('g[data-node="web"]')
        page.wait_for_selector('g[data-node="books"]')
        page.wait_for_selector('g[data-edge="web->books"] path', state="attached")
        page.wait_for_function(
            "() => document.querySelector('[data-edge-label=\"web->books\"] text')"
            "?.textContent.includes('rps')"
        )
        label = page.locator('[data-edge-label="web->books"] text').text_content() or ""
        assert "rps" in label and "%" in label
        assert page.locator('tr[data-key="web->books"]').count() == 1
        page.screenshot(path=str(screenshots / "dashboard-topology.png"))
        page.click('g[data-node="books"]')
        page.wait_for_selector('[data-page="service"][data-service="books"]')


def test_service_page_streams_the_tap_and_filters_it(mesh: Mesh, screenshots: Path) -> None:
    chromium_or_skip()
    # Opened as `tulle dashboard` opens it: the API token in the fragment.
    opened = mesh.cli("dashboard", "books", "--no-browser")
    assert opened.returncode == 0, opened.stderr
    with browser_page() as page:
        page.goto(opened.stdout.strip())
        page.wait_for_selector('tr[data-key="books-0"]')
        # The page keeps the token in the tab's sessionStorage, not in the URL.
        assert page.evaluate("location.hash") == "#/service/books"
        assert (
            page.evaluate("sessionStorage.getItem('tulle-api-token')") == API_TOKENS[mesh.api_url]
        )
        page.wait_for_selector('[data-page="service"] tr[data-key="web"]')
        page.wait_for_selector('[data-policy="none"]')
        assert "No policy data" in page.locator('[data-policy="none"]').inner_text()
        # Requests arrive in the tap while we watch.
        page.wait_for_function(f"() => {TAP_ROWS}.length >= 5")
        assert page.locator('[data-figure="rps"]').inner_text() != "—"
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshots / "dashboard-service.png"), full_page=True)

        # Filter on failures: new rows are 500s only.
        page.click("text=Clear")
        page.fill('input[name="status"]', "5xx")
        page.wait_for_function(
            f"() => {TAP_ROWS}.length >= 2",
            timeout=15_000,
        )
        statuses = page.eval_on_selector_all(
            "table[data-tap] tbody tr", "rows => rows.map(r => r.dataset.status)"
        )
        assert statuses and set(statuses) == {"500"}, statuses

        # Paused: nothing more arrives.
        page.click('button[data-action="pause"]')
        page.wait_for_selector('button[data-action="resume"]')
        paused_count = page.locator("table[data-tap] tbody tr").count()
        page.wait_for_timeout(2500)
        assert page.locator("table[data-tap] tbody tr").count() == paused_count
        assert "paused" in page.locator("[data-tap-state]").inner_text()


def test_without_the_token_the_read_views_work_and_tap_says_what_it_needs(mesh: Mesh) -> None:
    chromium_or_skip()
    with browser_page() as page:
        page.goto(f"{mesh.api_url}/#/service/books")
        page.wait_for_selector('tr[data-key="books-0"]')
        page.wait_for_selector('[data-page="service"] tr[data-key="web"]')
        page.wait_for_selector('[data-tap-state="unauthorized"]')
        assert "needs the API token" in page.locator("[data-tap-state]").inner_text()
        assert page.locator("table[data-tap] tbody tr").count() == 0


def test_cli_prints_the_dashboard_url(mesh: Mesh) -> None:
    result = mesh.cli("dashboard", "books", "--no-browser")
    assert result.returncode == 0, result.stderr
    token = API_TOKENS[mesh.api_url]
    assert result.stdout.strip() == f"{mesh.api_url}/#/service/books&token={token}"
    nobody = f"http://{LOOPBACK}:{free_port()}"
    unreachable = subprocess.run(
        [sys.executable, "-m", "tulle", "dashboard", "--control", nobody, "--no-browser"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert unreachable.returncode == 1
    assert "cannot reach the control plane" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_service_page_counts_faulted_and_rate_limited_requests_apart(mesh: Mesh) -> None:
    chromium_or_skip()
    from viz_mesh import manifest_text

    # Last in the module: the manifest gains a faulted route, one its callers
    # limit (outbound) and one books' own proxy limits (inbound policy).
    limits = (
        "  httpRoutes:\n"
        "    - {name: guarded, server: books-http, matches: [{path: {value: /guarded}}]}\n"
        "  rateLimits:\n"
        "    - name: guarded-limit\n"
        "      target: {httpRoute: guarded}\n"
        "      total: {requestsPerSecond: 0.01, burst: 1}\n"
    )
    mesh.manifest.write_text(
        manifest_text(mesh.books.inbound_port) + "      - name: chaos\n"
        "        matches: [{path: {value: /chaos}}]\n"
        "        fault: {abort: {status: 503, percent: 100}}\n"
        "      - name: capped\n"
        "        matches: [{path: {value: /capped}}]\n"
        "        rateLimit: {requestsPerSecond: 0.01, burst: 1}\n"
        "      - name: guarded\n"
        "        matches: [{path: {value: /guarded}}]\n" + _policy(mesh.books_app_port, limits)
    )
    eventually(lambda: mesh.get("/chaos") == 503, "the chaos route's fault in web-0", 60.0)
    eventually(lambda: mesh.get("/capped") == 429, "the capped route's limit in web-0", 60.0)
    eventually(lambda: mesh.get("/guarded") == 429, "the guarded route's limit in books-0", 60.0)
    for _ in range(3):
        assert mesh.get("/chaos") == 503
        assert mesh.get("/capped") == 429
        assert mesh.get("/guarded") == 429

    def counted() -> bool:
        document = mesh.cli_json("routes", "books")
        rows = {r["route"]: r for r in document["rows"]}
        chaos, capped = rows.get("chaos", {}), rows.get("capped", {})
        guarded = rows.get("guarded", {})
        return (
            chaos.get("faults_injected", 0) >= 4
            and capped.get("rate_limited", 0) >= 4
            and guarded.get("rate_limited_inbound", 0) >= 3
        )

    eventually(counted, "the faults and limits in /api/routes", 30.0)
    opened = mesh.cli("dashboard", "books", "--no-browser")
    assert opened.returncode == 0, opened.stderr
    with browser_page() as page:
        page.goto(opened.stdout.strip())
        chaos = 'tr[data-key="chaos"]'
        capped = 'tr[data-key="capped"]'
        page.wait_for_selector(chaos)
        page.wait_for_selector(capped)
        faulted = int(page.locator(f'{chaos} td[data-col="faults_injected"]').inner_text())
        limited = int(page.locator(f'{capped} td[data-col="rate_limited"]').inner_text())
        assert faulted >= 4 and limited >= 4, (faulted, limited)
        # Each counted in its own column only: no limit on chaos, no fault on capped.
        assert page.locator(f'{chaos} td[data-col="rate_limited"]').inner_text() == "0"
        assert page.locator(f'{capped} td[data-col="faults_injected"]').inner_text() == "0"
        # books' own inbound limit: on its route's row, and in the limits panel.
        guarded = 'tr[data-key="guarded"]'
        page.wait_for_selector(guarded)
        assert int(page.locator(f'{guarded} td[data-col="rate_limited"]').inner_text()) >= 3
        assert page.locator(f'{guarded} td[data-col="faults_injected"]').inner_text() == "0"
        limit = 'tr[data-key="guarded-limit"]'
        page.wait_for_selector(limit)
        assert int(page.locator(f'{limit} td[data-col="limited"]').inner_text()) >= 3
        assert page.locator(f'{limit} td[data-col="target"]').inner_text() == "httpRoute guarded"
