"""External tools the tests drive (curl, prometheus): found on PATH, or the test
is skipped with the package to install."""

from __future__ import annotations

import shutil
import subprocess

import pytest

CURL_TIMEOUT_S = 10


def require_binary(name: str, package: str | None = None) -> str:
    """The path of an external tool, or skip the test saying what is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install -y {package or name})")
    return path


def curl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run curl quietly (errors shown), bounded in time."""
    binary = require_binary("curl")
    return subprocess.run(
        [binary, "--silent", "--show-error", "--max-time", str(CURL_TIMEOUT_S), *args],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_S + 10,
        check=False,
        env=env,
    )
