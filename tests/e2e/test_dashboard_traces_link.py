"""The dashboard links to the mesh's trace receiver when the control plane knows one.

A real `tulle trace-receiver` and `tulle control --traces-url` (what `tulle up
--trace-receiver` passes it, through TULLE_CONTROL_TRACES_URL); the overview in
headless Chromium shows a "Traces" link whose target answers with the receiver's
JSON. Without `--traces-url` the link stays hidden. Skipped, saying why, without
Chromium (tests/e2e/dashboard/dashboard_browser.py).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _helpers in (
    _TESTS / "integration",
    _TESTS / "integration" / "viz",
    _TESTS / "e2e" / "dashboard",
):
    sys.path.insert(0, str(_helpers))

from dashboard_browser import browser_page, chromium_or_skip  # noqa: E402
from support.ports import LOOPBACK, free_port  # noqa: E402
from support.process import ProcessGroup, accepts_connections  # noqa: E402
from viz_mesh import start_control  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

MANIFEST = "services:\n  - name: books\n    endpoints: [127.0.0.1:9]\n"


def test_the_overview_links_to_the_trace_receiver(tmp_path: Path) -> None:
    chromium_or_skip()
    processes = ProcessGroup()
    try:
        _check_link(processes, tmp_path)
    finally:
        processes.close()


def _check_link(processes: ProcessGroup, tmp_path: Path) -> None:
    port = free_port()
    receiver = processes.tulle(
        "trace-receiver", ["trace-receiver", "--listen", f"{LOOPBACK}:{port}"]
    )
    receiver.wait_for(lambda: accepts_connections(LOOPBACK, port), "the receiver to listen")
    traces_url = f"http://{LOOPBACK}:{port}/traces"
    with_link = tmp_path / "with"
    without = tmp_path / "without"
    for directory in (with_link, without):
        directory.mkdir()
        (directory / "mesh.yaml").write_text(MANIFEST)
    _, _, api = start_control(
        processes, with_link / "mesh.yaml", "", extra=("--traces-url", traces_url)
    )
    _, _, plain_api = start_control(processes, without / "mesh.yaml", "")
    with browser_page() as page:
        page.goto(f"{api}/")
        link = page.wait_for_selector("a[data-traces]:not([hidden])")
        assert link is not None and link.get_attribute("href") == traces_url
        assert link.is_visible() and "Traces" in link.inner_text()
        page.goto(f"{plain_api}/")
        page.wait_for_selector(".page-head .sub")
        page.wait_for_function(
            "document.querySelector('.page-head .sub').textContent.includes('source')"
        )
        assert page.query_selector("a[data-traces]").is_hidden()
    # The link's target is the receiver's page.
    with urllib.request.urlopen(traces_url, timeout=5) as response:
        assert "traces" in json.loads(response.read())
