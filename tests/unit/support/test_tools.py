"""The tests' requirement helper (tests/integration/support/tools.py): a missing
tool skips a test on a developer's machine and fails it under CI, loudly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[2] / "integration"
sys.path.insert(0, str(INTEGRATION))

from support import tools  # noqa: E402

ABSENT = "tulle-no-such-tool-anywhere"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", False), ("0", False), ("false", False), ("No", False), ("1", True), ("true", True)],
)
def test_under_ci_reads_the_ci_variable(value: str, expected: bool) -> None:
    assert tools.under_ci({"CI": value}) is expected
    assert tools.under_ci({}) is False


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} is missing: apt-get install -y pkg"):
        tools.require_binary(ABSENT, "pkg")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set: a missing tool fails the run"):
        tools.require_binary(ABSENT, "pkg")
    with pytest.raises(pytest.fail.Exception, match="the Python module"):
        tools.require_module("tulle_no_such_module", "pip install nothing")


def test_a_present_tool_is_found_in_sbin_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    assert tools.require_binary("sh") == tools.find_binary("sh")
    monkeypatch.setenv("PATH", "/nonexistent")
    sbin = [d for d in ("/usr/sbin", "/sbin") if (Path(d) / "ldconfig").exists()]
    if sbin:
        assert tools.require_binary("ldconfig") == f"{sbin[0]}/ldconfig"


def test_a_run_under_ci_with_a_tool_missing_is_red(tmp_path: Path) -> None:
    """The whole path: pytest itself exits non-zero and says what to install."""
    (tmp_path / "test_needs_tool.py").write_text(
        textwrap.dedent(
            f"""
            from support.tools import require_binary

            def test_needs_it():
                require_binary("{ABSENT}", "the-package")
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(INTEGRATION), *sys.path]))

    def run(ci: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir",
             str(tmp_path), str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False, env={**env, "CI": ci},
        )  # fmt: skip

    red = run("1")
    assert red.returncode == 1, red.stdout
    assert "1 failed" in red.stdout
    assert "apt-get install -y the-package" in red.stdout
    green = run("")
    assert green.returncode == 0, green.stdout
    assert "1 skipped" in green.stdout
