"""Hostile manifests through the real commands: `tulle manifest validate`, `tulle up`,
and a running `tulle control`'s file watcher.

A manifest reader must fail fast with `FILE:LINE: message` on anything it cannot
use: a file that never ends, bytes that are not text, values out of range, and
YAML that costs far more to read than its size ("billion laughs"). The one-shot
commands run under a 1 GiB address-space limit, so a reader that tries to hold
/dev/zero in memory fails with a traceback instead of taking the machine down.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from control_launcher import mesh, start_control, write_manifest
from support.process import ProcessGroup

MEMORY_LIMIT = 1 << 30
COMMAND_TIMEOUT_S = 30.0


def run_tulle(*args: str, cwd: Path) -> tuple[int, str, float]:
    """(exit status, stdout + stderr, seconds) of one `tulle` command, memory-bounded.

    The limit is set by a shell (`ulimit -v`) rather than a `preexec_fn`: Python
    code between fork and exec in a test process that has used gRPC can abort
    in gRPC's fork handlers.
    """
    started = time.monotonic()
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'ulimit -v {MEMORY_LIMIT // 1024} && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "tulle",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def laughs() -> str:
    lines = ["services: []", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_validate_dev_zero_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    status, output, seconds = run_tulle("manifest", "validate", "/dev/zero", cwd=tmp_path)
    assert status == 1, output
    assert output.strip() == "/dev/zero: the manifest is larger than 4 MiB"
    assert seconds < 15


def test_up_dev_zero_fails_fast_without_a_traceback(tmp_path: Path) -> None:
    status, output, seconds = run_tulle(
        "up",
        "/dev/zero",
        "--state-dir",
        str(tmp_path / "state"),
        "--ingress-port",
        "0",
        cwd=tmp_path,
    )
    assert status == 1, output
    assert "/dev/zero: the manifest is larger than 4 MiB" in output
    assert "Traceback" not in output and "MemoryError" not in output
    assert seconds < 15


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"services:\n  - name: web\n    port: 80\xff\n", "mesh.yaml:3: not UTF-8 text"),
        (b"services:\n  - name: web\x00\n", "mesh.yaml:2: character U+0000 at column 14"),
        (
            b"services:\n  - name: web\n    timeout: 99999999999999999999h\n",
            'mesh.yaml:3: services[0].timeout: must be at most 24h, got "99999999999999999999h"',
        ),
        (
            b"services:\n  - name: web\n    timeout: 0.0000001ms\n",
            "mesh.yaml:3: services[0].timeout: must be a whole number of milliseconds",
        ),
        (
            b"services:\n  - name: web\n    endpoints: ['999.1.1.1:80']\n",
            "mesh.yaml:3: services[0].endpoints[0]: bad address '999.1.1.1:80': "
            "'999.1.1.1' is not an IPv4 address",
        ),
        (
            b"services:\n  - name: web\n    endpoints: ['host with space:80']\n",
            "mesh.yaml:3: services[0].endpoints[0]: bad address 'host with space:80': "
            "'host with space' is not a host name",
        ),
        (laughs().encode(), "mesh.yaml:7: aliases expand to more than 100000 values"),
        (b"services: " + b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    ],
    ids=[
        "not-utf8",
        "nul",
        "huge-duration",
        "tiny-duration",
        "bad-ipv4",
        "space",
        "laughs",
        "deep",
    ],
)
def test_validate_reports_bad_input_as_file_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    (tmp_path / "mesh.yaml").write_bytes(content)
    status, output, seconds = run_tulle("manifest", "validate", "mesh.yaml", cwd=tmp_path)
    assert status == 1, output
    assert expected in output
    assert "Traceback" not in output
    assert seconds < 15


def test_the_file_watcher_refuses_billion_laughs_at_once(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(mesh(9001))
    replica = start_control(processes, manifest)
    write_manifest(manifest, laughs())
    replica.process.wait_for(
        lambda: replica.metric("control_manifest_reload_total", result="error") == 1,
        "the edit refused",
        timeout=5.0,
    )
    assert "aliases expand to more than 100000 values" in replica.process.output()
    # Still serving, and still following good edits.
    assert replica.admin_get("/ready")[0] == 200
    write_manifest(manifest, mesh(9002))
    replica.process.wait_for(
        lambda: replica.metric("control_manifest_reload_total", result="ok") == 2,
        "the good edit accepted",
        timeout=5.0,
    )
