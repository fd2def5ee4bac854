"""`tulle up` restarts a proxy that is alive but wedged (its `/live` fails).

A stopped process (SIGSTOP) never answers: to a supervisor it is exactly a
proxy whose event loop stalled, which no exit status would ever reveal.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from up_harness import UpRun, http_get, port_of, up_running

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: hello
    protocol: http/1.1
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
      replicas: 1
"""
RESTART_TIMEOUT_S = 90.0


def sidecar_pid(run: UpRun) -> int | None:
    for process in run.state().get("processes", []):
        if process["name"] == "hello-0.proxy" and process.get("pid"):
            return int(process["pid"])
    return None


def test_a_wedged_sidecar_is_killed_and_restarted(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(MANIFEST)
    with up_running(manifest) as run:
        state = run.wait_ready()
        ingress = port_of(state["ingress"]["addr"])
        assert http_get(ingress, "/", {"Host": "hello"})[0] == 200
        wedged = sidecar_pid(run)
        assert wedged is not None
        os.kill(wedged, signal.SIGSTOP)
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        restarted = None
        while time.monotonic() < deadline:
            pid = sidecar_pid(run)
            if pid is not None and pid != wedged:
                restarted = pid
                break
            time.sleep(0.5)
        assert restarted is not None, run.read_output()
        assert "hello-0.proxy is wedged" in run.read_output()
        # The new sidecar serves again.
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status = http_get(ingress, "/", {"Host": "hello"})[0]
            except OSError:
                status = 0
            if status != 200:
                time.sleep(0.5)
        assert status == 200
