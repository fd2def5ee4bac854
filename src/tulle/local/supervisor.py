"""The supervisor of a local mesh: start, watch, restart and stop every process.

Every child runs in its own session (so its own process group: stopping a
child signals the whole group, shell wrappers and grandchildren included) and,
on Linux, with a parent-death signal, so that even a supervisor killed with
SIGKILL leaves no orphans. Children are only ever forked from the main
thread: the parent-death signal fires when the *thread* that forked exits.

Crashed processes are restarted after an exponential backoff with jitter
(`tulle.core.backoff`); a process that stayed up for a while starts again
from the shortest delay. A command that cannot be started, and a process in a
crash loop, are given up (`tulle.local.crashloop`): reported once with the
command and the end of its log, recorded in state.json (`state`, `error`),
and no longer waited for by the ready banner. Crashes are noticed while the
mesh starts too, not only once it is ready. Stopping drains in dependency order: first the
proxies (sidecars and ingress), so no new calls enter the apps; then the apps;
then the control plane; and anything left after a grace period is killed.
A proxy that stays alive but wedged (its `GET /live` failing three times in a
row, 5 s apart) is killed and restarted like a crashed one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tulle.core.backoff import Backoff, BackoffSpec
from tulle.local import isolation
from tulle.local.crashloop import CrashLoop, CrashLoopSpec, describe_exit
from tulle.local.isolation import run_in_namespace
from tulle.local.logstream import LogStream
from tulle.local.plan import SIDECAR_SHUTDOWN_GRACE_S, MeshPlan, ProcessSpec
from tulle.local.ports import LOOPBACK, port_is_listening
from tulle.local.state import StateDir

RESTART_BACKOFF = BackoffSpec(min_s=0.5, max_s=30.0, jitter=0.2)
# A process that ran this long before crashing is restarted without delay growth.
STABLE_AFTER_S = 10.0
CONTROL_READY_TIMEOUT_S = 30.0
MESH_READY_TIMEOUT_S = 45.0
APP_STOP_GRACE_S = 5.0
CONTROL_STOP_GRACE_S = 5.0
POLL_INTERVAL_S = 0.2
CRASH_LOOP = CrashLoopSpec(limit=5, window_s=60.0)
# A proxy whose `/live` fails this many times in a row, checked this often, is
# wedged (a stalled event loop, a dead listener: tulle.proxy.app): alive, yet
# of no use. It is killed, and restarted as a crashed process would be.
LIVENESS_INTERVAL_S = 5.0
LIVENESS_FAILURES = 3
LIVENESS_TIMEOUT_S = 2.0
# A proxy that has never answered (neither /ready nor /live) is still starting
# for this long; after it, silence counts as wedged too.
LIVENESS_STARTUP_S = 60.0
# Log lines quoted when a process fails for the first time or is given up.
LOG_TAIL_LINES = 5
# Exec failures that no restart can cure (anything else, e.g. EAGAIN from
# fork, counts as an ordinary failure).
_CANNOT_EXEC = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR})

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child between fork and exec must not import anything.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_supervisor() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StartError(Exception):
    """The mesh could not start (the control plane never became ready, ...)."""


@dataclass(slots=True)
class Child:
    spec: ProcessSpec
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(RESTART_BACKOFF))
    pump: threading.Thread | None = None
    crash: CrashLoop = field(default_factory=lambda: CrashLoop(CRASH_LOOP))
    # The last failure, for people: what happened and the end of the log.
    error: str = ""
    # Liveness of a proxy: failures count once it has answered `/ready` or
    # `/live` (it has started), or has had LIVENESS_STARTUP_S to do so.
    live_seen: bool = False
    live_failures: int = 0
    next_live_check: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def given_up(self) -> bool:
        return bool(self.crash.gave_up)

    def state(self) -> str:
        """running | restarting | cannot-start | crash-loop | stopped (state.json)."""
        if self.given_up:
            return "cannot-start" if self.popen is None else "crash-loop"
        if self.running():
            return "running"
        return "restarting" if self.restart_at is not None else "stopped"


def http_ready(
    port: int, path: str = "/ready", timeout_s: float = 0.5, host: str = LOOPBACK
) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def signal_group(pid: int, signum: int) -> None:
    """Signal the process group led by `pid` (every child leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class Supervisor:
    def __init__(self, plan: MeshPlan, state: StateDir, logs: LogStream) -> None:
        self.plan = plan
        self.state = state
        self.logs = logs
        self.children = [Child(spec, state.log_file(spec.name)) for spec in plan.processes]
        self.status = "starting"
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.stop_requested = threading.Event()

    # -- starting ----------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        argv = list(child.spec.argv)
        log_file = open(child.log_path, "ab")  # noqa: SIM115 -- closed by the pump thread
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log_file.write(f"--- {stamp} tulle up: starting {' '.join(argv)}\n".encode())
        log_file.flush()
        try:
            child.popen = subprocess.Popen(
                argv,
                env=dict(child.spec.env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Safe: forked from the main thread only, and the hook calls no Python imports.
                preexec_fn=_die_with_supervisor,
                close_fds=True,
            )
        except OSError as exc:
            log_file.write(f"--- cannot start: {exc}\n".encode())
            log_file.close()
            child.popen = None
            child.last_exit = None
            if exc.errno in _CANNOT_EXEC:
                self._cannot_start(child, exc)
            else:
                self._crashed(child)
            return
        child.started_at = time.monotonic()
        child.restart_at = None
        child.live_seen = False
        child.live_failures = 0
        assert child.popen.stdout is not None
        child.pump = self.logs.pump(child.spec.name, child.popen.stdout, log_file)

    def start(self) -> None:
        """Start the control plane, wait for it, then everything else."""
        for name, text in self.plan.generated_files.items():
            (self.state.root / name).write_text(text)
        control = [c for c in self.children if c.spec.role == "control"]
        for child in control:
            self._spawn(child)
        self.write_state()
        self._wait(control, CONTROL_READY_TIMEOUT_S, fatal=True)
        if self.stop_requested.is_set():
            return
        # Sidecars before their apps, so an app's first outbound call finds one.
        for child in self.children:
            if child.spec.role != "control":
                self._spawn(child)
        self.write_state()

    def _is_ready(self, child: Child) -> bool:
        port = child.spec.ready_port
        if port is None:
            return child.running()
        if child.spec.ready_http:
            ready = http_ready(port, host=child.spec.ready_host)
            child.live_seen = child.live_seen or ready
            return ready
        if child.spec.netns is not None:
            # An isolated app listens on its namespace's loopback only.
            return run_in_namespace(child.spec.netns, lambda: port_is_listening(port)) is True
        return port_is_listening(port, child.spec.ready_host)

    def _wait(self, children: list[Child], timeout_s: float, *, fatal: bool) -> list[str]:
        """Wait until each child is ready; returns the names that never were."""
        deadline = time.monotonic() + timeout_s
        pending = list(children)
        while pending and time.monotonic() < deadline and not self.stop_requested.is_set():
            pending = [c for c in pending if not self._is_ready(c)]
            if fatal:
                for child in pending:
                    if child.given_up:
                        raise StartError(f"{child.spec.name}: {child.error}")
                    if child.popen is not None and child.popen.poll() is not None:
                        raise StartError(self._failure(child))
            else:
                # Restart what crashed meanwhile, and stop waiting for what was given up.
                self.poll_once()
                pending = [c for c in pending if not c.given_up]
            if pending:
                self.stop_requested.wait(POLL_INTERVAL_S)
        if pending and fatal and not self.stop_requested.is_set():
            raise StartError(
                f"{pending[0].spec.name} was not ready after {timeout_s:g}s; "
                f"see {pending[0].log_path}"
            )
        return [c.spec.name for c in pending]

    def _log_tail(self, child: Child, lines: int) -> list[str]:
        if child.pump is not None:
            child.pump.join(timeout=1.0)
        with contextlib.suppress(OSError):
            return child.log_path.read_text(errors="replace").splitlines()[-lines:]
        return []

    def _failure(self, child: Child) -> str:
        code = child.popen.returncode if child.popen is not None else None
        tail = "\n".join(self._log_tail(child, 10))
        return f"{child.spec.name} exited with code {code}; its log ({child.log_path}):\n{tail}"

    def given_up(self) -> list[Child]:
        """The processes the supervisor no longer restarts."""
        return [c for c in self.children if c.given_up]

    def wait_ready(self, timeout_s: float = MESH_READY_TIMEOUT_S) -> list[str]:
        """Wait for every process; returns those not ready in time (they keep trying)."""
        not_ready = self._wait(
            [c for c in self.children if c.spec.role != "control"], timeout_s, fatal=False
        )
        self.status = "ready"
        self.write_state()
        return not_ready

    # -- watching ----------------------------------------------------------

    def _cannot_start(self, child: Child, exc: OSError) -> None:
        """The command cannot be executed: say so once, clearly, and give it up."""
        program = child.spec.argv[0] if child.spec.argv else "?"
        child.error = f"cannot start `{program}`: {exc.strerror or exc}"
        child.crash.cannot_start(time.monotonic(), child.error)
        child.restart_at = None
        self.logs.supervisor(
            f"{child.spec.name}: {child.error}\n"
            f"    command: {shlex.join(child.spec.argv)}\n"
            "    not restarting it: fix the command (the manifest's `instances.command`) "
            "and run `tulle up` again",
            warning=True,
        )

    def _crashed(self, child: Child) -> None:
        """A failure: restart after a backoff, or give up on a crash loop."""
        now = time.monotonic()
        ran_for = now - child.started_at if child.started_at else 0.0
        if ran_for >= STABLE_AFTER_S:
            child.backoff.reset()
        what = describe_exit(child.last_exit)
        tail = [line for line in self._log_tail(child, LOG_TAIL_LINES) if line.strip()]
        first = not child.error
        child.error = what + (f"; last log line: {tail[-1]}" if tail else "")
        name = child.spec.name
        if child.crash.failed(now):
            child.restart_at = None
            child.error = f"{child.crash.gave_up}; last: {child.error}"
            self.logs.supervisor(
                f"{name} {what}: {child.crash.gave_up}\n"
                f"    command: {shlex.join(child.spec.argv)}\n"
                f"    its log: {child.log_path}" + "".join(f"\n    | {line}" for line in tail),
                warning=True,
            )
            return
        delay = child.backoff.next_delay()
        child.restart_at = now + delay
        detail = ""
        if first:
            # The first failure is the one worth reading; later ones only count.
            detail = f"\n    command: {shlex.join(child.spec.argv)}" + "".join(
                f"\n    | {line}" for line in tail
            )
        self.logs.supervisor(f"{name} {what}; restarting in {delay:.1f}s{detail}", warning=True)

    def poll_once(self) -> None:
        """Notice crashed children and restart those whose backoff is over."""
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.given_up:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                    changed = True
                continue
            if child.popen is not None and child.popen.poll() is not None:
                child.last_exit = child.popen.returncode
                # Whatever the crashed leader left behind in its group goes too.
                signal_group(child.popen.pid, signal.SIGKILL)
                self._crashed(child)
                changed = True
        if changed:
            self.write_state()
        self._check_liveness(now)

    def _check_liveness(self, now: float) -> None:
        """Kill proxies that are alive but wedged (`/live` failing); poll_once restarts them."""
        for child in self.children:
            port = child.spec.ready_port
            if child.spec.role not in ("sidecar", "ingress") or port is None:
                continue
            if now < child.next_live_check or child.popen is None or not child.running():
                continue
            child.next_live_check = now + LIVENESS_INTERVAL_S
            if http_ready(port, "/live", LIVENESS_TIMEOUT_S, child.spec.ready_host):
                child.live_seen = True
                child.live_failures = 0
                continue
            if not child.live_seen and now - child.started_at < LIVENESS_STARTUP_S:
                continue  # still starting
            child.live_failures += 1
            if child.live_failures >= LIVENESS_FAILURES:
                self.logs.supervisor(
                    f"{child.spec.name} is wedged (GET /live failed {child.live_failures} "
                    "times in a row): killing it to restart it",
                    warning=True,
                )
                child.live_failures = 0
                signal_group(child.popen.pid, signal.SIGKILL)

    def run(self) -> None:
        """Supervise until a stop is requested."""
        while not self.stop_requested.is_set():
            self.poll_once()
            self.stop_requested.wait(POLL_INTERVAL_S)

    # -- stopping ----------------------------------------------------------

    def _stop_phase(self, children: Iterable[Child], grace_s: float) -> None:
        chosen = [c for c in children if c.popen is not None]
        for child in chosen:
            child.restart_at = None
            if child.popen is not None and child.popen.poll() is None:
                signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in chosen:
            assert child.popen is not None
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.logs.supervisor(f"{child.spec.name} did not stop in time; killing it")
                signal_group(child.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.popen.wait(timeout=2.0)

    def stop(self) -> None:
        """Drain and stop everything, proxies first; leaves no process behind."""
        self.status = "stopping"
        with contextlib.suppress(OSError):
            self.write_state()
        for child in self.children:
            child.restart_at = None

        def of(*roles: str) -> Callable[[Child], bool]:
            return lambda child: child.spec.role in roles

        self._stop_phase(
            filter(of("sidecar", "ingress"), self.children), SIDECAR_SHUTDOWN_GRACE_S + 1
        )
        self._stop_phase(filter(of("app"), self.children), APP_STOP_GRACE_S)
        self._stop_phase(filter(of("control"), self.children), CONTROL_STOP_GRACE_S)
        # Grandchildren that outlived their group leader.
        for child in self.children:
            if child.popen is not None:
                signal_group(child.popen.pid, signal.SIGKILL)
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=1.0)
        self.status = "stopped"
        with contextlib.suppress(OSError):
            self.write_state()

    # -- state -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        plan = self.plan
        ingress = f"{LOOPBACK}:{plan.ingress_port}"
        return {
            "supervisor_pid": os.getpid(),
            "status": self.status,
            "started_at": self.started_at,
            "state_dir": str(self.state.root.resolve()),
            "manifest": plan.manifest_path,
            "generated_manifest": str(self.state.generated_manifest.resolve()),
            "control": {
                "grpc": plan.control_grpc_addr,
                "admin": f"{LOOPBACK}:{plan.control_admin_port}",
                "http": plan.control_http_url,
            },
            "ingress": {
                "addr": ingress,
                "url": f"http://{ingress}/",
                "services": list(plan.exposed),
                "admin": f"{LOOPBACK}:{plan.ingress_admin_port}",
            },
            "services": [{"name": n, "protocol": p} for n, p in plan.services],
            "instances": [
                {
                    "name": i.name,
                    "service": i.service,
                    "replica": i.replica,
                    "protocol": i.protocol,
                    "app": f"{i.host}:{i.app_port}",
                    "inbound": f"{i.host}:{i.inbound_port}",
                    # Isolated: inside the namespace (its own loopback), where
                    # the capture rules send the app's connections.
                    "outbound": f"{LOOPBACK}:{i.outbound_port}",
                    "admin": f"{i.host}:{i.admin_port}",
                    **({"netns": i.netns} if i.netns is not None else {}),
                }
                for i in plan.instances
            ],
            **({"isolation": isolation.describe(plan.network)} if plan.network is not None else {}),
            "processes": [
                {
                    "name": c.spec.name,
                    "role": c.spec.role,
                    "service": c.spec.service,
                    "pid": c.pid if c.running() else None,
                    "state": c.state(),
                    "exit_code": c.last_exit,
                    "error": c.error,
                    "restarts": c.restarts,
                    "log": str(c.log_path.resolve()),
                    "argv": list(c.spec.argv),
                }
                for c in self.children
            ],
        }

    def write_state(self) -> None:
        self.state.write_state(self.describe())
