"""Running `tulle up` in tests: start it, wait for it, and prove nothing is left.

`UpRun` starts `python -m tulle up` in its own session with a temporary state
directory and ingress port 0, reads `state.json` to learn every process and
port, and on `close()` stops it (SIGTERM, then SIGKILL of every process group
it recorded) so a failing test still leaves nothing running. `leftovers`
scans /proc for any process that belongs to a mesh: recorded pids, and
command lines naming the state directory or one of the mesh's ports.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def process_named(state: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of state.json's `processes` called `name`."""
    processes = state["processes"]
    assert isinstance(processes, list)
    return next(p for p in processes if p["name"] == name)


@contextlib.contextmanager
def requests_meanwhile(port: int, host: str, timeout_s: float) -> Iterator[None]:
    """GET / with `Host: host` to `port` every 50 ms on a thread, for at most
    `timeout_s`, until the block ends; failed requests are ignored."""
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                http_get(port, "/", {"Host": host})
            stop.wait(0.05)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(10)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class MeshWatcher:
    """Reads a mesh's state.json and finds its processes in /proc; starts nothing."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.seen_pids: set[int] = set()
        self.markers: set[str] = {str(state_dir.resolve())}

    def state(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(loaded, dict):
            return {}
        self._remember(loaded)
        return loaded

    def _remember(self, state: dict[str, Any]) -> None:
        for process in state.get("processes", []):
            if process.get("pid"):
                self.seen_pids.add(int(process["pid"]))

    def _belongs(self, pid: int, cmdline: str) -> bool:
        # Every process `tulle up` starts carries TULLE_MESH_STATE_DIR in its
        # environment, and the supervisor has the state dir on its command
        # line. Ports and pids are not proof: other tests reuse them.
        if any(marker in cmdline for marker in self.markers):
            return True
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        wanted = f"TULLE_MESH_STATE_DIR={self.state_dir.resolve()}".encode()
        return wanted in environ.split(b"\0")

    def leftovers(self) -> list[str]:
        """Processes of this mesh still alive (found by their marks, never by port)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == os.getpid() or not _alive(pid):
                continue
            cmdline = _cmdline(pid)
            if self._belongs(pid, cmdline):
                found.append(f"{pid}: {cmdline}")
        return found

    def wait_gone(self, timeout_s: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.leftovers()
        return left

    def kill_leftovers(self) -> None:
        # Only processes that still look like this mesh's: a pid seen earlier
        # may since belong to someone else.
        for line in self.leftovers():
            pid = int(line.split(":", 1)[0])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class UpRun(MeshWatcher):
    """A foreground `tulle up` started by a test."""

    def __init__(self, argv: list[str], state_dir: Path, cwd: Path) -> None:
        super().__init__(state_dir)
        self.output = state_dir.parent / f"{state_dir.name}-up-output.txt"
        self._output = self.output.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tulle", "up", *argv, "--state-dir", str(state_dir)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def read_output(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tulle up exited early:\n{self.read_output()}")
            state = self.state()
            if state.get("status") == "ready":
                return state
            time.sleep(0.2)
        raise AssertionError(f"tulle up not ready in {timeout_s}s:\n{self.read_output()}")

    def close(self) -> None:
        """Stop whatever is left, whatever the test did."""
        with contextlib.suppress(ProcessLookupError):
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        self.kill_leftovers()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._output.close()


@contextlib.contextmanager
def up_running(manifest: Path) -> Iterator[UpRun]:
    """`tulle up` on `manifest` (ingress port 0), run in the manifest's directory
    with its state in `state` there; stopped when the block ends."""
    run = UpRun([str(manifest), "--ingress-port", "0"], manifest.parent / "state", manifest.parent)
    try:
        yield run
    finally:
        run.close()
