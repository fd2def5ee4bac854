"""`tulle up` on a tiny manifest: start, route through the ingress, restart, stop clean."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from up_harness import (
    MeshWatcher,
    UpRun,
    http_get,
    metric_sum,
    port_of,
    process_named,
    requests_meanwhile,
    up_running,
)

pytestmark = pytest.mark.integration

TINY_MANIFEST = """\
services:
  - name: hello
    protocol: http/1.1
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
      replicas: 2
    routes:
      - name: root
        matches:
          - path: {type: Exact, value: /}
        timeout: 2s
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(TINY_MANIFEST)
    return path


@pytest.fixture
def mesh(manifest: Path) -> Iterator[UpRun]:
    with up_running(manifest) as run:
        yield run


def test_request_through_ingress_reaches_a_backend_via_two_sidecars(mesh: UpRun) -> None:
    state = mesh.wait_ready()
    names = {p["name"] for p in state["processes"]}
    assert names == {
        "control",
        "ingress",
        "hello-0",
        "hello-0.proxy",
        "hello-1",
        "hello-1.proxy",
    }
    assert all(p["pid"] for p in state["processes"])
    ingress = port_of(state["ingress"]["addr"])
    statuses = [http_get(ingress, "/", {"Host": "hello"})[0] for _ in range(6)]
    status, body = http_get(ingress, "/", {"Host": "hello"})
    assert (status, body) == (200, b"Hello, Tulle\n")
    assert statuses == [200] * 6

    ingress_metrics = http_get(port_of(state["ingress"]["admin"]), "/metrics")[1].decode()
    assert metric_sum(ingress_metrics, "response_total", direction="outbound") >= 7
    inbound_total = 0.0
    for instance in state["instances"]:
        text = http_get(port_of(instance["admin"]), "/metrics")[1].decode()
        inbound_total += metric_sum(text, "response_total", direction="inbound")
    assert inbound_total >= 7

    generated = (mesh.state_dir / "mesh.generated.yaml").read_text()
    for instance in state["instances"]:
        assert instance["inbound"] in generated
    assert (mesh.state_dir / "logs" / "hello-0.proxy.log").stat().st_size > 0


def test_a_killed_app_is_restarted(mesh: UpRun) -> None:
    state = mesh.wait_ready()
    victim = process_named(state, "hello-1")
    old_pid = int(str(victim["pid"]))
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    restarted = None
    while time.monotonic() < deadline:
        current = process_named(mesh.state(), "hello-1")
        if current["pid"] and current["pid"] != old_pid and current["restarts"] == 1:
            restarted = current
            break
        time.sleep(0.2)
    assert restarted is not None, mesh.read_output()
    assert "hello-1 was killed by signal 9; restarting" in mesh.read_output()
    app_port = port_of(next(i for i in state["instances"] if i["name"] == "hello-1")["app"])
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline and status != 200:
        try:
            status = http_get(app_port, "/")[0]
        except OSError:
            time.sleep(0.2)
    assert status == 200


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_everything(mesh: UpRun, signum: int) -> None:
    mesh.wait_ready()
    assert mesh.leftovers()
    mesh.process.send_signal(signum)
    assert mesh.process.wait(timeout=30) == 0
    assert mesh.wait_gone(timeout_s=5) == []
    assert mesh.state()["status"] == "stopped"
    assert not (mesh.state_dir / "up.pid").exists()


def test_a_second_up_in_the_same_state_dir_is_refused(
    mesh: UpRun, manifest: Path, tmp_path: Path
) -> None:
    mesh.wait_ready()
    second = subprocess.run(
        [sys.executable, "-m", "tulle", "up", str(manifest), "--state-dir", str(mesh.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert second.returncode == 1
    assert "a mesh is already running in" in second.stderr
    assert "tulle down" in second.stderr


def test_detach_then_down(tmp_path: Path, manifest: Path) -> None:
    state_dir = tmp_path / "detached"
    watcher = MeshWatcher(state_dir)
    try:
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "tulle",
                "up",
                str(manifest),
                "--detach",
                "--ingress-port",
                "0",
                "--state-dir",
                str(state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "tulle down" in started.stdout
        state = watcher.state()
        assert state["status"] == "ready"
        ingress = port_of(state["ingress"]["addr"])
        assert http_get(ingress, "/", {"Host": "hello"})[0] == 200

        stopped = subprocess.run(
            [sys.executable, "-m", "tulle", "down", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" in stopped.stdout
        assert "killed" not in stopped.stdout
        assert watcher.wait_gone(timeout_s=5) == []

        again = subprocess.run(
            [sys.executable, "-m", "tulle", "down", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert again.returncode == 0
        assert "no mesh is running" in again.stdout
    finally:
        watcher.kill_leftovers()


def test_a_bad_manifest_names_the_field_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "services:\n"
        "  - name: hello\n"
        "    instances:\n"
        "      command: tulle demo backend --addr 127.0.0.1:{port}\n"
        "      replicas: many\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tulle", "up", str(bad), "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"{bad}:5: services[0].instances.replicas" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "state.json").exists()


RESTRICTED_MANIFEST = """\
services:
  - name: hello
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
  - name: hidden
    instances:
      command: ["tulle", "demo", "backend", "--addr", "127.0.0.1:{port}"]
ingress:
  services: [hello]
"""


def test_the_ingress_reaches_only_the_services_the_manifest_names(tmp_path: Path) -> None:
    manifest = tmp_path / "restricted.yaml"
    manifest.write_text(RESTRICTED_MANIFEST)
    with up_running(manifest) as run:
        state = run.wait_ready()
        assert state["ingress"]["services"] == ["hello"]
        ingress = port_of(state["ingress"]["addr"])
        assert http_get(ingress, "/", {"Host": "hello"}) == (200, b"Hello, Tulle\n")
        status, body = http_get(ingress, "/", {"Host": "hidden"})
        assert status == 503 and b"hidden" in body
        # Inside the mesh, hidden is still reachable: hello's sidecar knows it.
        hello = next(i for i in state["instances"] if i["service"] == "hello")
        assert http_get(port_of(hello["outbound"]), "/", {"Host": "hidden"})[0] == 200
        exposed = (run.state_dir / "mesh.ingress.yaml").read_text()
        assert "name: hello" in exposed and "name: hidden" not in exposed
    assert run.wait_gone(timeout_s=5) == []


def test_the_mesh_keeps_its_credentials_in_the_state_dir(mesh: UpRun, tmp_path: Path) -> None:
    """`tulle up` makes the API token and the proxies' admin token (0600); writes,
    tap and a sidecar's shutdown need them; the CLI and the tap relay send them."""
    state = mesh.wait_ready()
    for name in ("api-token", "admin-token"):
        assert (mesh.state_dir / name).stat().st_mode & 0o777 == 0o600
    control = state["control"]["http"].rstrip("/")
    control_port = port_of(control)
    connection = http.client.HTTPConnection("127.0.0.1", control_port, timeout=5)
    try:
        connection.request(
            "POST",
            "/api/apply",
            body=b"services: []\npolicy: {}\n",
            headers={"Content-Type": "application/yaml"},
        )
        assert connection.getresponse().status == 401
    finally:
        connection.close()
    sidecar = next(i for i in state["instances"] if i["name"] == "hello-0")
    connection = http.client.HTTPConnection("127.0.0.1", port_of(sidecar["admin"]), timeout=5)
    try:
        connection.request("POST", "/shutdown", body=b"")
        assert connection.getresponse().status == 401
    finally:
        connection.close()
    assert http_get(port_of(sidecar["admin"]), "/ready")[0] == 200

    env = {**os.environ, "TULLE_STATE_DIR": str(mesh.state_dir)}
    change = tmp_path / "change.yaml"
    change.write_text("services:\n  - name: hello\n    timeout: 3s\n")
    applied = subprocess.run(
        [sys.executable, "-m", "tulle", "apply", "-f", str(change)],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr

    ingress = port_of(state["ingress"]["addr"])
    with requests_meanwhile(ingress, "hello", timeout_s=20.0):
        tapped = subprocess.run(
            [sys.executable, "-m", "tulle", "tap", "hello", "--json", "--limit", "2",
             "--duration", "15"],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
    assert tapped.returncode == 0, tapped.stderr
    events = [json.loads(line) for line in tapped.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["event", "event"], events
