"""The CLI finds a running `tulle up` mesh from any directory (the current mesh).

`tulle up` runs in one directory; `check`, `stat`, `tap`, `dashboard` and
`down` run from another, with no --control or --state-dir, and act on it.
`TULLE_HOME` is this test's own (tests/conftest.py), so a user's registration
is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from up_harness import UpRun, port_of, requests_meanwhile

from tulle.local import registry

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: hello
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TULLE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def mesh(tmp_path: Path, home: Path) -> Iterator[UpRun]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mesh.yaml").write_text(MANIFEST)
    run = UpRun(["mesh.yaml", "--ingress-port", "0"], project / "state", project)
    try:
        yield run
    finally:
        run.close()


def tulle(cwd: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tulle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_check_stat_tap_dashboard_and_down_from_another_directory(
    mesh: UpRun, tmp_path: Path, home: Path
) -> None:
    state = mesh.wait_ready()
    assert registry.registered() == mesh.state_dir.resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ingress = port_of(state["ingress"]["addr"])
    with requests_meanwhile(ingress, "hello", timeout_s=90):
        dashboard = tulle(elsewhere, "dashboard", "--no-browser")
        assert dashboard.returncode == 0, dashboard.stderr
        # The URL carries the API token in its fragment (for the live tap), never in
        # what the browser sends to the server.
        url, _, fragment = dashboard.stdout.strip().partition("#")
        assert url == state["control"]["http"]
        assert fragment.startswith("token=") and len(fragment) > len("token=")

        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            stat = tulle(elsewhere, "stat", "--json")
            assert stat.returncode == 0, stat.stderr
            rows = [r for r in json.loads(stat.stdout)["rows"] if r.get("service") == "hello"]
            rows = [r for r in rows if r.get("requests")]
            if not rows:
                time.sleep(1.0)
        assert rows, "tulle stat from another directory saw no traffic to hello"

        tap = tulle(elsewhere, "tap", "hello", "--json", "--limit", "2", "--duration", "30")
        assert tap.returncode == 0, tap.stderr
        events = [json.loads(line) for line in tap.stdout.splitlines()]
        assert len(events) == 2 and all(e["path"] == "/" for e in events)

        check = tulle(elsewhere, "check", "--json")
        report = json.loads(check.stdout)
        names = {c["name"] for cat in report["categories"] for c in cat["checks"]}
        assert "hello/hello-0 ready" in names, report

    down = tulle(elsewhere, "down")
    assert down.returncode == 0, down.stderr
    assert f"stopping the mesh in {mesh.state_dir.resolve()}" in down.stdout
    assert "stopped" in down.stdout
    assert mesh.process.wait(timeout=30) == 0
    assert mesh.wait_gone(timeout_s=10) == []
    assert registry.registered() is None  # unregistered on a clean stop
    again = tulle(elsewhere, "down")
    assert again.returncode == 0 and "no mesh is running" in again.stdout
