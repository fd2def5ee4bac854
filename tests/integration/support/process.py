"""Child processes for integration tests: start, wait until ready, always clean up.

Every process a test starts goes into a `ProcessGroup`; the group's `close()`
(called from a fixture's `finally`) sends SIGTERM, waits a bounded time, then
SIGKILLs whatever is left, so no test leaves a process behind.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 5.0
# A bound, not an expectation: a proxy is ready in about a second on an idle
# machine, but starting Python and its imports takes 10-20 s of wall time on
# two cores at load 15 (a shared CI machine), and waiting costs nothing when
# the process is quick.
READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05


class ManagedProcess:
    """One child process with its output captured in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            preexec_fn=preexec_fn,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        tail = "\n".join(self.output().splitlines()[-30:])
        return f"{self.name} (pid {self.pid}, argv {self.argv}):\n{tail}"

    def wait_for(
        self, check: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT_S
    ) -> None:
        """Poll `check` until it holds; fail with the process's output otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}) before {what}\n"
                    + self.describe()
                )
            if check():
                return
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{self.name}: no {what} within {timeout} s\n{self.describe()}")

    def wait_for_match(
        self, pattern: re.Pattern[str], what: str, timeout: float = READY_TIMEOUT_S
    ) -> re.Match[str]:
        """Poll the output until `pattern` is found in it (as `wait_for`); the match."""
        found: list[re.Match[str]] = []

        def announced() -> bool:
            match = pattern.search(self.output())
            if match:
                found.append(match)
            return match is not None

        self.wait_for(announced, what, timeout)
        return found[0]

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, then SIGKILL; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT_S)
        self._log.close()
        return self.popen.returncode


class ProcessGroup:
    """The processes one fixture started; `close()` stops them all."""

    def __init__(self) -> None:
        self._log_dir = Path(tempfile.mkdtemp(prefix="tulle-it-"))
        self.processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ManagedProcess:
        """`preexec_fn` runs in the child before exec (e.g. enter a namespace, drop to a uid)."""
        process = ManagedProcess(name, argv, self._log_dir, env, preexec_fn)
        self.processes.append(process)
        return process

    def tulle(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """`python -m tulle ARGS...` with this interpreter."""
        return self.start(name, [sys.executable, "-m", "tulle", *args], env)

    def close(self) -> None:
        # Reverse order: proxies stop before the backends they front.
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """GET `path`; the status, or None when nothing answers."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (workers forked by a proxy, for instance)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(child) for child in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            pending.extend(children)
    return found


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants, in KiB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            total += rss_kib(member)
        except OSError:
            continue
    return total
