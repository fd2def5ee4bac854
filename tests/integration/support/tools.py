"""External tools the tests drive (curl, prometheus, chromium): found on PATH.

A missing tool skips the test with the package to install, except under CI
(`CI` set to anything but empty, `0` or `false`; `scripts/test.sh` sets it):
there the test fails, so that a run without the tools is never green.
`scripts/test-deps.sh` installs every one of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

CURL_TIMEOUT_S = 10
# Debian installs some tools in sbin directories that a user's PATH may lack.
_SBIN = ("/usr/sbin", "/sbin")


def under_ci(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run must fail, not skip, when something it needs is missing."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def missing(what: str, install: str) -> NoReturn:
    """A test cannot run without `what`: skip it, or fail it under CI. Never returns."""
    message = f"{what} is missing: {install}"
    if under_ci():
        pytest.fail(f"{message} (CI is set: a missing tool fails the run)", pytrace=False)
    pytest.skip(message)


def find_binary(name: str) -> str | None:
    """The path of an external tool, or None."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _SBIN:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_binary(name: str, package: str | None = None) -> str:
    """The path of an external tool; if absent, skip the test (fail it under CI)."""
    path = find_binary(name)
    if path is None:
        missing(name, f"apt-get install -y {package or name}")
    return path


def require_module(module: str, install: str) -> None:
    """A Python package the test imports; if absent, skip the test (fail it under CI)."""
    try:
        __import__(module)
    except ImportError:
        missing(f"the Python module {module}", install)


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
