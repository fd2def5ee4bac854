"""`tulle proxy`'s two start paths, through real processes (issue 18).

The usual one reads the flags without typer and runs the proxy in the same
process; a command line the fast parser is not sure of goes through typer,
which re-execs the lean `tulle.proxy.runner` image. Both must serve, and
errors and `--help` stay typer's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, proxy_args, wait_ready
from support.ports import free_ports
from support.process import ProcessGroup
from support.rawhttp import exchange, request_bytes

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 60


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.partition("=")[::2] for entry in entries if entry)


def start(processes: ProcessGroup, backend: Backend, name: str, extra: list[str]) -> Proxy:
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(inbound, outbound, admin, static_dst={"books": [backend.addr]}, extra=extra)
    return wait_ready(Proxy(processes.tulle(name, args), inbound, outbound, admin))


def test_plain_flags_run_the_proxy_in_the_cli_process(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    proxy = start(processes, http_backend, "proxy-fast", ["--detect-timeout", "0.25"])
    # No exec: the process is still `python -m tulle proxy ...`.
    argv = cmdline(proxy.pid)
    assert argv[1:4] == ["-m", "tulle", "proxy"], argv
    assert exchange(*proxy.outbound, request_bytes("GET", "/status/201", "books")).status == 201


def test_a_value_only_typer_reads_takes_the_exec_path(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    # `1E-1` is a float typer reads; the fast parser accepts only plain spellings.
    proxy = start(processes, http_backend, "proxy-typer", ["--detect-timeout", "1E-1"])
    argv = cmdline(proxy.pid)
    assert argv[1:3] == ["-m", "tulle.proxy.runner"], argv
    # glibc reads the mmap threshold only at exec: the typer path passes it on.
    assert environ(proxy.pid).get("MALLOC_MMAP_THRESHOLD_") == str(4 << 20)
    assert exchange(*proxy.outbound, request_bytes("GET", "/status/202", "books")).status == 202


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich does not shorten the long flag names.
    env = {**os.environ, "TERMINAL_WIDTH": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tulle", *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--static-dst", "nonsense"], "Invalid value for --static-dst"),
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--no-such-flag"], "No such option: --no-such-flag"),
        (["--identity", "spiffe://t/ns/a/sa/b"], "an identity needs --identity-token"),
    ],
)
def test_errors_are_typers(args: list[str], message: str) -> None:
    result = run_cli("proxy", *args)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_flag() -> None:
    from tulle.cli.proxy_flags import FLAGS

    result = run_cli("proxy", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for flag in FLAGS:
        assert flag.option in text
