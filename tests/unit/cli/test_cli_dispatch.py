"""The dispatcher in `tulle.cli.main` answers as the typer app always did."""

from __future__ import annotations

import os
import subprocess
import sys

from tulle import __version__

TIMEOUT_S = 60
# Run as the console script does: argv[0] is `tulle`, no package __main__.
SCRIPT = "import sys; sys.argv[0] = 'tulle'; from tulle.cli.main import run; run()"


def tulle(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env={**os.environ, **env},
    )  # fmt: skip


def test_version() -> None:
    result = tulle("--version")
    assert (result.returncode, result.stdout) == (0, f"tulle {__version__}\n")


def test_no_arguments_is_help_and_a_usage_error() -> None:
    result = tulle()
    assert result.returncode == 2
    assert "Usage: tulle [OPTIONS] COMMAND [ARGS]..." in result.stdout
    assert tulle("-h").returncode == 0


def test_unknown_command_is_typers_error() -> None:
    result = tulle("nosuch")
    assert result.returncode == 2
    assert "No such command 'nosuch'" in result.stderr


def test_shell_completion_goes_to_typer() -> None:
    result = tulle(_TULLE_COMPLETE="complete_bash", COMP_WORDS="tulle st", COMP_CWORD="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["stat"]
