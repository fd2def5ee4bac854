"""The import budget of the fast paths: what `tulle --version`, `tulle --help` and
the proxy's start import (issue 18).

Each case runs a fresh interpreter with `-X importtime` and compares the
modules it imported with what that path may not touch. A heavy import that
creeps back onto one of these paths costs every CLI call or every pod's start
a tenth of a second or more; move it into the function that needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Neither the CLI machinery nor anything that only some command needs.
HEAVY = ("typer", "click", "rich", "grpc", "cryptography", "yaml", "h2", "hpack", "google")
TIMEOUT_S = 60


def imported_modules(*argv: str) -> tuple[set[str], str]:
    """Every module a fresh `python -X importtime ARGV` imported; and its stdout."""
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
    )  # fmt: skip
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    modules.discard("imported package")  # the header line
    assert modules, result.stderr
    return modules, result.stdout


def offending(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in forbidden or m in forbidden)


def test_version_imports_nothing_heavy() -> None:
    modules, out = imported_modules("-m", "tulle", "--version")
    assert out.startswith("tulle ")
    assert offending(modules, HEAVY) == []
    # Not one command group, nor the proxy or the control plane.
    ours = sorted(m for m in modules if m.startswith("tulle."))
    assert ours == ["tulle.cli", "tulle.cli.commands", "tulle.cli.main"]
    assert "asyncio" not in modules


def test_root_help_imports_no_typer_and_no_command_group() -> None:
    modules, out = imported_modules("-m", "tulle", "--help")
    assert "proxy" in out and "identity" in out  # the whole list of commands
    # rich draws it, and only the few pieces it needs (no markdown, no pygments).
    assert offending(modules, tuple(h for h in HEAVY if h != "rich")) == []
    assert offending(modules, ("markdown_it", "pygments")) == []
    assert {m for m in modules if m.startswith("tulle.")} == {
        "tulle.cli",
        "tulle.cli.commands",
        "tulle.cli.main",
        "tulle.cli.roothelp",
    }


@pytest.mark.parametrize(
    "code",
    [
        # What `tulle proxy` imports before it runs the proxy, and the proxy itself.
        "import tulle.cli.main, tulle.cli.proxy_flags, tulle.proxy.runner, tulle.proxy.app",
        # The exec'd image of the typer path.
        "import tulle.proxy.runner, tulle.proxy.app",
    ],
)
def test_proxy_start_imports_no_cli_machinery_grpc_or_h2(code: str) -> None:
    modules, _ = imported_modules("-c", code)
    # grpc and cryptography come only with --control-addr / --identity; h2 with
    # the first HTTP/2 connection.
    assert offending(modules, HEAVY) == []
    assert not any(m.startswith("tulle.cli.") and
                   m not in ("tulle.cli.main", "tulle.cli.commands", "tulle.cli.proxy_flags")
                   for m in modules)  # fmt: skip


def test_stat_json_imports_no_rich_and_no_pydantic() -> None:
    modules, _ = imported_modules(
        "-m", "tulle", "stat", "--json", "--control", "http://127.0.0.1:1"
    )  # nothing listens on port 1: the command fails fast, after its imports
    # pydantic: typer imports it to run a command; stat --json does not go that way.
    assert offending(modules, ("grpc", "cryptography", "yaml", "h2", "rich", "pydantic")) == []
    assert not any(m.startswith(("tulle.proxy", "tulle.control", "tulle.cli.up")) for m in modules)
