"""`tulle up` gives up on a command that cannot start and on a crash loop.

A mesh with a good service, an instance whose command does not exist and one
that exits at once: the first is reported once (instance, command, error) and
never restarted; the second is restarted until the crash-loop limit, then
given up. state.json records both, the ready banner comes long before its 45 s
timeout, and `tulle check` fails with a hint naming each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from up_harness import UpRun, http_get, port_of, process_named, up_running

from tulle.local.supervisor import CRASH_LOOP, MESH_READY_TIMEOUT_S

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: hello
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
  - name: broken
    instances:
      command: tulle-no-such-command --port {port}
  - name: crashy
    instances:
      command: ["python", "-c", "import sys; print('crashy: no config'); sys.exit(3)"]
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[UpRun]:
    path = tmp_path / "mesh.yaml"
    path.write_text(MANIFEST)
    with up_running(path) as run:
        yield run


def test_a_command_that_cannot_start_and_a_crash_loop_are_given_up(mesh: UpRun) -> None:
    started = time.monotonic()
    state = mesh.wait_ready(timeout_s=MESH_READY_TIMEOUT_S + 15)
    waited = time.monotonic() - started
    # The banner waits for the crash loop to run out (about 10 s of backoff),
    # never for its full timeout.
    assert waited < MESH_READY_TIMEOUT_S - 10, (waited, mesh.read_output())

    broken = process_named(state, "broken-0")
    assert broken["state"] == "cannot-start"
    assert broken["pid"] is None and broken["restarts"] == 0
    assert "tulle-no-such-command" in str(broken["error"])
    crashy = process_named(state, "crashy-0")
    assert crashy["state"] == "crash-loop", crashy
    assert crashy["restarts"] == CRASH_LOOP.limit - 1
    assert crashy["exit_code"] == 3
    assert "crashy: no config" in str(crashy["error"])
    assert process_named(state, "hello-0")["state"] == "running"

    # state.json says ready just before the banner is printed.
    deadline = time.monotonic() + 20
    while "Press Ctrl-C to stop." not in mesh.read_output() and time.monotonic() < deadline:
        time.sleep(0.2)
    output = mesh.read_output()
    # Reported once, clearly: the instance, the command, the error.
    assert output.count("| broken-0: cannot start `tulle-no-such-command`") == 1, output
    assert "command: tulle-no-such-command --port" in output
    assert "not running, given up: broken-0" in output
    assert "not running, given up: crashy-0" in output
    assert "crash loop: failed 5 times" in output

    # Given up means no more restarts, however long the mesh runs.
    time.sleep(3.0)  # longer than the largest backoff step the loop had reached
    later = mesh.state()
    assert process_named(later, "crashy-0")["restarts"] == CRASH_LOOP.limit - 1
    assert process_named(later, "broken-0")["restarts"] == 0

    # The rest of the mesh works.
    ingress = port_of(state["ingress"]["addr"])
    assert http_get(ingress, "/", {"Host": "hello"})[0] == 200

    # `tulle check` fails, naming both, with a hint.
    check = subprocess.run(
        [sys.executable, "-m", "tulle", "check", "--json", "--control", state["control"]["http"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    report = json.loads(check.stdout)
    failing = {
        c["name"]: c for cat in report["categories"] for c in cat["checks"] if c["status"] == "fail"
    }
    assert "broken-0 running" in failing and "crashy-0 running" in failing, failing
    assert "cannot-start" in failing["broken-0 running"]["detail"]
    assert "crash-loop" in failing["crashy-0 running"]["detail"]
    assert "broken-0.log" in failing["broken-0 running"]["hint"]
