"""`tulle up` (run a local mesh: control plane, services, sidecars, ingress) and `tulle down`.

The work is in `tulle.local`; this module parses options, turns failures into
one-line messages, and handles `--detach`: the detached mesh is the same
command re-run in its own session with the hidden `--supervise` flag, its
output going to `<state dir>/up.log`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from tulle.cli import demo_shop as _demo_shop  # noqa: F401 -- registers `tulle demo shop`
from tulle.cli.app import app
from tulle.control.manifest import ManifestError, load_document, read_manifest_bytes
from tulle.core.credentials import CredentialError
from tulle.local import isolation, registry
from tulle.local.logstream import LogStream
from tulle.local.manifest import LocalManifest, parse_local_manifest
from tulle.local.plan import (
    DEFAULT_INGRESS_PORT,
    NO_PREFERRED_PORTS,
    PreferredPorts,
    build_plan,
    instance_names,
    resolve_manifest_path,
    tulle_argv,
)
from tulle.local.ports import port_is_free
from tulle.local.state import DEFAULT_STATE_DIR, MeshAlreadyRunning, StateDir, pid_alive
from tulle.local.summary import print_summary
from tulle.local.supervisor import StartError, Supervisor, signal_group
from tulle.net.capture import PROXY_UID

DETACH_READY_TIMEOUT_S = 90.0
DOWN_TIMEOUT_S = 30.0

console = Console()
error_console = Console(stderr=True)


def _fail(command: str, message: str) -> typer.Exit:
    error_console.print(Text(f"{command}: ", style="bold red") + Text(message), soft_wrap=True)
    return typer.Exit(1)


def _load(path: Path) -> tuple[LocalManifest, Any]:
    # Read once, bounded: the same bytes are validated and copied.
    data = read_manifest_bytes(path)
    manifest = parse_local_manifest(data, source=str(path))
    # Valid YAML by now: the raw document is what the generated manifest copies.
    return manifest, load_document(data, str(path))[1]


@app.command("up")
def up(
    manifest_file: str = typer.Argument(
        "", metavar="MANIFEST", help="The mesh to run (mesh.yaml); none: the built-in demo shop."
    ),
    state_dir: str = typer.Option(
        DEFAULT_STATE_DIR,
        "--state-dir",
        envvar="TULLE_STATE_DIR",
        help="Where logs, the pid file and state.json go; one mesh per directory.",
    ),
    ingress_port: int | None = typer.Option(
        None,
        "--ingress-port",
        min=0,
        max=65535,
        envvar="TULLE_INGRESS_PORT",
        help="Port on 127.0.0.1 where calls from outside reach the services "
        f"(0: pick a free one; default: the manifest's ingress.port, else {DEFAULT_INGRESS_PORT}).",
    ),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Run in the background; stop it with `tulle down`."
    ),
    mtls: bool = typer.Option(
        True,
        "--mtls/--no-mtls",
        envvar="TULLE_UP_MTLS",
        help="Mutual TLS between sidecars, with a CA in the state directory (on by default).",
    ),
    default_ports: bool = typer.Option(
        True,
        "--default-ports/--no-default-ports",
        envvar="TULLE_UP_DEFAULT_PORTS",
        help="Give the control plane its documented ports (HTTP API 8084, gRPC 8086, admin "
        "9990) where free; --no-default-ports allocates every port.",
    ),
    isolated: bool | None = typer.Option(
        None,
        "--isolated/--no-isolated",
        envvar="TULLE_UP_ISOLATED",
        help="Each instance in its own network namespace with transparent capture: apps "
        "call services by name, with no proxy setting (needs root; docs/transparent.md). "
        "Default: the manifest's `isolated:`, else off.",
        show_default=False,
    ),
    supervise: bool = typer.Option(
        False, "--supervise", hidden=True, help="Internal: the detached supervisor itself."
    ),
    otlp_endpoint: str = typer.Option(
        "",
        "--otlp-endpoint",
        envvar="TULLE_PROXY_OTLP_ENDPOINT",
        help="Every proxy exports a span per request to this OTLP/HTTP collector "
        "(http://HOST:4318; `tulle trace-receiver` is one); empty: no tracing.",
    ),
    trace_receiver: bool = typer.Option(
        False,
        "--trace-receiver",
        help="Run `tulle trace-receiver` beside the mesh (127.0.0.1:4318 if free) and "
        "export every proxy's spans to it: GET /traces, and STATE_DIR/traces.jsonl.",
    ),
) -> None:
    """Run a whole mesh on this machine: control plane, every service with its sidecar, ingress."""
    if otlp_endpoint:
        if not otlp_endpoint.startswith(("http://", "https://")):
            raise typer.BadParameter("expected http(s)://HOST:PORT", param_hint="--otlp-endpoint")
        # Every proxy reads it from the environment it inherits (local/plan.py
        # base_environment), the detached supervisor's included.
        os.environ["TULLE_PROXY_OTLP_ENDPOINT"] = otlp_endpoint
    path = resolve_manifest_path(manifest_file or None)
    try:
        manifest, raw = _load(path)
    except ManifestError as exc:
        raise _fail("tulle up", f"the manifest is not valid:\n{exc}") from None
    if ingress_port is None:
        configured = manifest.ingress.port if manifest.ingress is not None else None
        ingress_port = configured if configured is not None else DEFAULT_INGRESS_PORT
    if isolated is None:
        isolated = manifest.isolated
    state = StateDir(Path(state_dir))
    if isolated:
        try:
            isolation.check_requirements()
        except isolation.IsolationError as exc:
            raise _fail("tulle up", str(exc)) from None
    if not supervise:
        if state.is_locked():
            raise _fail("tulle up", str(MeshAlreadyRunning(state.root, state.read_pid())))
        if ingress_port and not port_is_free(ingress_port):
            raise _fail(
                "tulle up",
                f"the ingress port 127.0.0.1:{ingress_port} is in use; "
                "pass --ingress-port PORT (0 picks a free one)",
            )
    preferred = PreferredPorts() if default_ports else NO_PREFERRED_PORTS
    if trace_receiver and (otlp_endpoint or isolated):
        raise _fail(
            "tulle up",
            "--trace-receiver runs a receiver on 127.0.0.1: not with --otlp-endpoint "
            "(spans go there) nor --isolated (proxies in namespaces cannot reach it)",
        )
    if detach and not supervise:
        raise typer.Exit(
            _detach(path, state, ingress_port, mtls, default_ports, isolated, trace_receiver)
        )
    # The receiver lives as long as the mesh: started here by the process that
    # runs it (the detached supervisor when detached), before the proxies.
    receiver = _start_trace_receiver(state) if trace_receiver else None
    try:
        code = _run(
            manifest,
            raw,
            str(path),
            state,
            ingress_port,
            detached=supervise,
            mtls=mtls,
            preferred=preferred,
            isolated=isolated,
        )
    finally:
        if receiver is not None:
            receiver.terminate()
            try:
                receiver.wait(5)
            except subprocess.TimeoutExpired:
                receiver.kill()
    raise typer.Exit(code)


TRACE_RECEIVER_PORT = 4318  # OTLP/HTTP's


def _start_trace_receiver(state: StateDir) -> subprocess.Popen[bytes]:
    """`tulle trace-receiver` for this mesh; its URL goes to every proxy's
    environment (TULLE_PROXY_OTLP_ENDPOINT, inherited through the plan)."""
    from tulle.local.ports import allocate_ports, port_is_listening

    port = TRACE_RECEIVER_PORT if port_is_free(TRACE_RECEIVER_PORT) else allocate_ports(1)[0]
    state.create()
    out = state.root / "traces.jsonl"
    process = subprocess.Popen(
        [*tulle_argv(), "trace-receiver", "--listen", f"127.0.0.1:{port}", "--out", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while not port_is_listening(port):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise _fail("tulle up", f"the trace receiver did not listen on 127.0.0.1:{port}")
        time.sleep(0.05)
    os.environ["TULLE_PROXY_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    # The control plane's dashboard links to it.
    os.environ["TULLE_CONTROL_TRACES_URL"] = f"http://127.0.0.1:{port}/traces"
    console.print(
        f"traces: http://127.0.0.1:{port}/traces (and {out})", markup=False, highlight=False
    )
    return process


def _run(
    manifest: LocalManifest,
    raw: Any,
    source: str,
    state: StateDir,
    ingress_port: int,
    *,
    detached: bool,
    mtls: bool = True,
    preferred: PreferredPorts = NO_PREFERRED_PORTS,
    isolated: bool = False,
) -> int:
    try:
        lock = state.acquire()
    except MeshAlreadyRunning as exc:
        raise _fail("tulle up", str(exc)) from None
    except OSError as exc:
        raise _fail("tulle up", f"cannot use the state directory {state.root}: {exc}") from None
    logs = LogStream()
    # The current mesh: the CLI finds it from any directory (tulle.local.registry).
    try:
        registry.register(state.root)
    except OSError as exc:
        logs.supervisor(f"cannot register the mesh in {registry.tulle_home()}: {exc}")
    # What a `tulle up --isolated` killed with -9 left behind (the lock is ours now).
    network_record = isolation.Record(state.root)
    _clean_network(network_record, logs.supervisor)
    try:
        network = None
        if isolated:
            try:
                network = isolation.plan_network(
                    state.root,
                    instance_names(manifest),
                    list(manifest.mesh.services),
                    isolation.taken_networks(),
                )
                isolation.create(
                    network,
                    network_record,
                    [*tulle_argv(), "init", "--proxy-uid", str(PROXY_UID)],
                    logs.supervisor,
                )
            except isolation.IsolationError as exc:
                logs.supervisor(f"cannot isolate the instances: {exc}", warning=True)
                return 1
        try:
            plan = build_plan(
                manifest,
                raw,
                manifest_path=source,
                state_dir=state.root,
                ingress_port=ingress_port,
                mtls=mtls,
                preferred=preferred,
                network=network,
            )
        except CredentialError as exc:
            raise _fail("tulle up", str(exc)) from None
        logs.width = max(len("tulle up"), *(len(spec.name) for spec in plan.processes))
        supervisor = Supervisor(plan, state, logs)

        def request_stop(signum: int, frame: FrameType | None) -> None:
            supervisor.stop_requested.set()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, request_stop)
        try:
            supervisor.start()
            not_ready = supervisor.wait_ready()
            if not supervisor.stop_requested.is_set():
                with logs.held():
                    print_summary(supervisor.describe(), console)
                    if not_ready:
                        console.print(
                            f"not ready yet (still starting or crashing): {', '.join(not_ready)}",
                            style="yellow",
                        )
                    if not detached:
                        console.print("\nPress Ctrl-C to stop.", style="dim")
                supervisor.run()
            logs.supervisor("stopping: proxies, then apps, then the control plane")
            return 0
        except StartError as exc:
            logs.supervisor(f"cannot start the mesh: {exc}", warning=True)
            return 1
        finally:
            supervisor.stop()
            logs.supervisor("stopped")
    finally:
        _clean_network(network_record, logs.supervisor)
        registry.unregister(state.root)
        state.release(lock)


def _clean_network(record: isolation.Record, say: Callable[..., None]) -> bool:
    """Remove the namespaces, bridge and hosts files of `--isolated`, if any;
    whether everything recorded is gone."""
    if record.empty:
        return True
    problems = isolation.destroy(record, say)
    for problem in problems:
        say(f"clean-up: {problem}", warning=True)
    return not problems


def _detach(
    path: Path,
    state: StateDir,
    ingress_port: int,
    mtls: bool = True,
    default_ports: bool = True,
    isolated: bool = False,
    trace_receiver: bool = False,
) -> int:
    state.create()
    argv = [
        *tulle_argv(),
        "up",
        str(path.resolve()),
        "--state-dir",
        str(state.root.resolve()),
        "--ingress-port",
        str(ingress_port),
        "--mtls" if mtls else "--no-mtls",
        "--default-ports" if default_ports else "--no-default-ports",
        "--isolated" if isolated else "--no-isolated",
        "--supervise",
        *(["--trace-receiver"] if trace_receiver else []),
    ]
    with contextlib.suppress(OSError):
        state.state_file.unlink()
    with open(state.supervisor_log, "ab") as log:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + DETACH_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = "\n".join(state.supervisor_log.read_text(errors="replace").splitlines()[-15:])
            raise _fail("tulle up", f"the detached mesh exited; {state.supervisor_log}:\n{tail}")
        current = state.read_state()
        ours = current is not None and current.get("supervisor_pid") == child.pid
        if current is not None and ours and current.get("status") == "ready":
            print_summary(current, console)
            console.print(
                f"\nRunning in the background (supervisor pid {child.pid}); "
                f"logs in {state.root}/logs. Stop it with: tulle down (from any directory)",
                markup=False,
                highlight=False,
            )
            return 0
        time.sleep(0.2)
    raise _fail(
        "tulle up",
        f"the detached mesh was not ready after {DETACH_READY_TIMEOUT_S:g}s; "
        f"see {state.supervisor_log}; stop it with `tulle down --state-dir {state.root}`",
    )


@app.command("down")
def down(
    state_dir: str = typer.Option(
        "",
        "--state-dir",
        envvar="TULLE_STATE_DIR",
        help="The state directory of the mesh to stop (as given to `tulle up`). Default: "
        "./.tulle (or a parent's) when its mesh runs, else the current mesh `tulle up` registered.",
    ),
    timeout: float = typer.Option(
        DOWN_TIMEOUT_S,
        "--timeout",
        min=1.0,
        help="Seconds to wait for a clean stop before killing what is left.",
    ),
) -> None:
    """Stop a mesh started with `tulle up --detach`, and wait until no process is left."""
    found = registry.find_state_dir(state_dir)
    if found is None:
        console.print(
            "no mesh is running here and none is registered as current "
            f"({registry.tulle_home()}); pass --state-dir DIR",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(0)
    state = StateDir(found)
    pid = state.read_pid()
    if not state.is_locked() or pid is None:
        registry.unregister(state.root)
        console.print(
            f"no mesh is running in {state.root}", markup=False, highlight=False, soft_wrap=True
        )
        # A `tulle up --isolated` that was killed (-9) left its network behind.
        raise typer.Exit(0 if _clean_network(isolation.Record(state.root), _say) else 1)
    recorded = state.read_state() or {}
    children = [p.get("pid") for p in recorded.get("processes", []) if p.get("pid")]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    console.print(
        f"stopping the mesh in {state.root} (supervisor pid {pid})...",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (state.is_locked() or pid_alive(pid)):
        time.sleep(0.2)
    forced = False
    if pid_alive(pid):
        forced = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for child in children:
        if isinstance(child, int) and pid_alive(child):
            forced = True
            signal_group(child, signal.SIGKILL)
    if forced:
        console.print("some processes did not stop in time and were killed", style="yellow")
    # The supervisor unregisters on a clean stop; not when it had to be killed.
    registry.unregister(state.root)
    # It also removes its network on a clean stop; not when it had to be killed
    # (the kernel drops its lock as it dies: a moment after SIGKILL).
    deadline = time.monotonic() + 5.0
    while forced and state.is_locked() and time.monotonic() < deadline:
        time.sleep(0.1)
    cleaned = state.is_locked() or _clean_network(isolation.Record(state.root), _say)
    console.print("stopped", markup=False)
    if not cleaned:
        raise typer.Exit(1)


def _say(text: str, *, warning: bool = False) -> None:
    console.print(
        text, markup=False, highlight=False, soft_wrap=True, style="yellow" if warning else None
    )
