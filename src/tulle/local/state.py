"""The state directory of a local mesh (`.tulle/` by default).

Layout::

    .tulle/
      up.lock               held (flock) by the running supervisor: one mesh per directory
      up.pid                the supervisor's pid
      state.json            every process, pid, port and URL; rewritten on every change
      api-token             the HTTP API's bearer token (mode 0600): writes and tap need it
      admin-token           the proxies' admin token (mode 0600): POST /shutdown and /tap
      mesh.generated.yaml   the manifest the control plane serves (instances -> endpoints)
      mesh.ingress.yaml     with `ingress.services`: what the ingress's own control plane serves
      up.log                the supervisor's own output when detached
      logs/<name>.log       one file per process (web-0.log, web-0.proxy.log, ...)

The lock is an advisory `flock` on `up.lock`, not the existence of the pid
file: the kernel drops it when the supervisor dies in any way, so a crashed
mesh never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".tulle"
GENERATED_MANIFEST = "mesh.generated.yaml"
INGRESS_MANIFEST = "mesh.ingress.yaml"
STATE_FILE = "state.json"
API_TOKEN_FILE = "api-token"
ADMIN_TOKEN_FILE = "admin-token"


class MeshAlreadyRunning(Exception):
    """Another supervisor holds the lock of this state directory."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f" (supervisor pid {pid})" if pid else ""
        super().__init__(
            f"a mesh is already running in {state_dir}{who}; "
            f"stop it with `tulle down --state-dir {state_dir}` or use another --state-dir"
        )


@dataclass(frozen=True, slots=True)
class StateDir:
    """Paths inside one state directory, and the lock that guards it."""

    root: Path

    @property
    def lock_file(self) -> Path:
        return self.root / "up.lock"

    @property
    def pid_file(self) -> Path:
        return self.root / "up.pid"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def api_token_file(self) -> Path:
        """The control plane's HTTP API token (writes, tap): the CLI reads it."""
        return self.root / API_TOKEN_FILE

    @property
    def admin_token_file(self) -> Path:
        """The proxies' admin token (`POST /shutdown`, `/tap`), shared by the mesh."""
        return self.root / ADMIN_TOKEN_FILE

    @property
    def generated_manifest(self) -> Path:
        return self.root / GENERATED_MANIFEST

    @property
    def ingress_manifest(self) -> Path:
        return self.root / INGRESS_MANIFEST

    @property
    def supervisor_log(self) -> Path:
        return self.root / "up.log"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, process_name: str) -> Path:
        return self.logs / f"{process_name}.log"

    def create(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> int:
        """Take the lock for this process; returns its fd (keep it open while running).

        Raises MeshAlreadyRunning if another supervisor holds it.
        """
        self.create()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MeshAlreadyRunning(self.root, self.read_pid()) from None
        # Children must not inherit the lock: only the supervisor holds the mesh.
        os.set_inheritable(fd, False)
        self.pid_file.write_text(f"{os.getpid()}\n")
        return fd

    def is_locked(self) -> bool:
        """Whether a supervisor currently holds the lock."""
        if not self.lock_file.exists():
            return False
        fd = os.open(self.lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def write_state(self, state: dict[str, Any]) -> None:
        # Write-then-rename so that `tulle down` and tests never read half a file.
        temporary = self.state_file.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        temporary.replace(self.state_file)

    def read_state(self) -> dict[str, Any] | None:
        try:
            loaded = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # The state letter follows the parenthesised command name.
            fields = stat.read().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return bool(fields) and fields[0] != "Z"
