"""`tulle demo`: the demo backend alone, or a backend with a Tulle proxy in front.

`tulle demo` (or `tulle demo run`) is the README's first command until
`tulle up` exists: it starts the demo backend and a `tulle proxy` as child
processes, waits until both answer, prints where everything runs and how to
call it, and stops both on Ctrl-C or SIGTERM. `tulle demo backend` runs only
the backend (HTTP, TCP echo, or a server-speaks-first banner server).
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import IO, Literal

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tulle.cli.app import app
from tulle.demo import backend as demo_backend

demo_app = typer.Typer(
    help="Run the demo: a small backend with a Tulle proxy in front of it.",
    no_args_is_help=False,
    invoke_without_command=True,
)
app.add_typer(demo_app, name="demo")

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
DEMO_SERVICE_NAME = "demo"

console = Console()
error_console = Console(stderr=True)


def _print_error(command: str, message: str) -> None:
    # Plain Text, not markup: child logs may contain brackets; no wrapping so
    # paths and commands stay copyable.
    error_console.print(Text(f"{command}: ", style="bold red") + Text(message), soft_wrap=True)


class DemoError(Exception):
    """Something the user can fix (a busy port, a child that would not start)."""


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _check_ports(host: str, ports: dict[str, int]) -> None:
    taken = [(option, port) for option, port in ports.items() if not _port_is_free(host, port)]
    if taken:
        lines = [
            f"port {port} on {host} is already in use (choose another with {option})"
            for option, port in taken
        ]
        raise DemoError("\n".join(lines))
    if len(set(ports.values())) != len(ports):
        raise DemoError("the demo's ports must all be different")


def _http_get_status(host: str, port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class Child:
    """A child process whose output goes to a log file we can show on failure."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _wait_until(child: Child, host: str, port: int, path: str, expected: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise DemoError(
                f"{child.name} exited with status {child.process.returncode}:\n{child.log_tail()}"
            )
        if _http_get_status(host, port, path) == expected:
            return
        time.sleep(0.05)
    raise DemoError(
        f"{child.name} did not become ready on {host}:{port} within {READY_TIMEOUT_S:.0f} s:\n"
        f"{child.log_tail()}"
    )


def _print_summary(host: str, backend_port: int, outbound: int, inbound: int, admin: int) -> None:
    table = Table(title="Tulle demo", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("address")
    table.add_column("role")
    table.add_row("demo backend", f"{host}:{backend_port}", "the app (HTTP/1.1)")
    table.add_row(
        "proxy outbound",
        f"{host}:{outbound}",
        f"HTTP proxy for clients; '{DEMO_SERVICE_NAME}' -> proxy inbound",
    )
    table.add_row("proxy inbound", f"{host}:{inbound}", "forwards to the demo backend")
    table.add_row("proxy admin", f"{host}:{admin}", "/metrics /ready /live")
    console.print(table)
    console.print("\nCall the backend through the mesh (outbound -> inbound -> app):")
    console.print(f"  curl -x http://{host}:{outbound} http://{DEMO_SERVICE_NAME}/", markup=False)
    console.print(
        f"  http_proxy=http://{host}:{outbound} curl http://{DEMO_SERVICE_NAME}/headers",
        markup=False,
    )
    console.print("Through the inbound side only:")
    console.print(f"  curl http://{host}:{inbound}/", markup=False)
    console.print("Metrics:")
    console.print(f"  curl http://{host}:{admin}/metrics", markup=False)
    console.print("\nPress Ctrl-C to stop.", style="dim")


def run_demo(
    host: str, backend_port: int, outbound_port: int, inbound_port: int, admin_port: int
) -> int:
    """Start backend + proxy, wait for a signal or a dying child, stop both."""
    _check_ports(
        host,
        {
            "--backend-port": backend_port,
            "--outbound-port": outbound_port,
            "--inbound-port": inbound_port,
            "--admin-port": admin_port,
        },
    )
    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous_term = signal.signal(signal.SIGTERM, request_stop)
    previous_int = signal.signal(signal.SIGINT, request_stop)
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="tulle-demo-") as log_dir:
        try:
            backend = Child(
                "backend",
                [
                    sys.executable,
                    "-m",
                    "tulle",
                    "demo",
                    "backend",
                    "--addr",
                    f"{host}:{backend_port}",
                ],
                Path(log_dir),
            )
            children.append(backend)
            _wait_until(backend, host, backend_port, "/", 200)
            proxy = Child(
                "proxy",
                [
                    sys.executable,
                    "-m",
                    "tulle",
                    "proxy",
                    "--inbound-addr",
                    f"{host}:{inbound_port}",
                    "--outbound-addr",
                    f"{host}:{outbound_port}",
                    "--admin-addr",
                    f"{host}:{admin_port}",
                    "--app-addr",
                    f"{host}:{backend_port}",
                    "--static-dst",
                    f"{DEMO_SERVICE_NAME}={host}:{inbound_port}",
                ],
                Path(log_dir),
            )
            children.append(proxy)
            _wait_until(proxy, host, admin_port, "/ready", 200)
            _print_summary(host, backend_port, outbound_port, inbound_port, admin_port)
            while not stop_requested:
                for child in children:
                    if child.process.poll() is not None:
                        raise DemoError(
                            f"{child.name} exited with status {child.process.returncode}:\n"
                            f"{child.log_tail()}"
                        )
                time.sleep(0.2)
            console.print("stopping...", style="dim")
            return 0
        finally:
            # The proxy first, so it drains before its app goes away.
            for child in reversed(children):
                child.stop()
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)


@demo_app.callback()
def demo_main(
    context: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Loopback address every demo listener binds to."
    ),
    backend_port: int = typer.Option(8080, "--backend-port", help="Port of the demo backend."),
    outbound_port: int = typer.Option(
        4140, "--outbound-port", help="Port of the proxy's outbound (HTTP proxy) listener."
    ),
    inbound_port: int = typer.Option(
        4143, "--inbound-port", help="Port of the proxy's inbound listener."
    ),
    admin_port: int = typer.Option(
        4191, "--admin-port", help="Port of the proxy's admin listener (/metrics, /ready)."
    ),
) -> None:
    """Start the demo backend and a Tulle proxy in front of it (Ctrl-C stops both)."""
    if context.invoked_subcommand is not None:
        return
    _run_or_exit(host, backend_port, outbound_port, inbound_port, admin_port)


@demo_app.command("run")
def demo_run(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Loopback address every demo listener binds to."
    ),
    backend_port: int = typer.Option(8080, "--backend-port", help="Port of the demo backend."),
    outbound_port: int = typer.Option(
        4140, "--outbound-port", help="Port of the proxy's outbound (HTTP proxy) listener."
    ),
    inbound_port: int = typer.Option(
        4143, "--inbound-port", help="Port of the proxy's inbound listener."
    ),
    admin_port: int = typer.Option(
        4191, "--admin-port", help="Port of the proxy's admin listener (/metrics, /ready)."
    ),
) -> None:
    """Start the demo backend and a Tulle proxy in front of it (Ctrl-C stops both)."""
    _run_or_exit(host, backend_port, outbound_port, inbound_port, admin_port)


def _run_or_exit(
    host: str, backend_port: int, outbound_port: int, inbound_port: int, admin_port: int
) -> None:
    try:
        code = run_demo(host, backend_port, outbound_port, inbound_port, admin_port)
    except DemoError as error:
        _print_error("tulle demo", str(error))
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@demo_app.command("backend")
def demo_backend_command(
    addr: str = typer.Option(
        "127.0.0.1:8080", "--addr", help="HOST:PORT to listen on (port 0 picks a free one)."
    ),
    mode: str = typer.Option(
        "http",
        "--mode",
        help="http: the HTTP/1.1 demo routes; tcp-echo: opaque TCP echo; "
        "banner: sends '220 ready' on connect, then echoes.",
    ),
) -> None:
    """Run only the demo backend, in the foreground."""
    if mode not in ("http", "tcp-echo", "banner"):
        _print_error("tulle demo backend", f"unknown mode {mode!r}")
        raise typer.Exit(2)
    backend_mode: Literal["http", "tcp-echo", "banner"] = (
        "http" if mode == "http" else "tcp-echo" if mode == "tcp-echo" else "banner"
    )
    try:
        host, port = demo_backend.parse_addr(addr)
    except ValueError as error:
        _print_error("tulle demo backend", str(error))
        raise typer.Exit(2) from None

    def announce(bound: tuple[str, int]) -> None:
        # One machine-readable line: tests and `tulle demo` may read it.
        print(f"listening {backend_mode} {bound[0]}:{bound[1]}", flush=True)

    try:
        demo_backend.run(f"{host}:{port}", backend_mode, announce)
    except OSError as error:
        _print_error("tulle demo backend", f"cannot listen on {addr}: {error}")
        raise typer.Exit(1) from None
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
