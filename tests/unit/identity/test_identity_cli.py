"""`tulle identity ...` commands, run in-process with typer's runner."""

from __future__ import annotations

import re
import time
from pathlib import Path

from typer.testing import CliRunner

import tulle.cli.identity  # noqa: F401  (registers the command group)
from tulle.cli.app import app
from tulle.identity.store import IssuerDirectory
from tulle.identity.tokens import verify_token

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    # Rich wraps at 80 columns; compare text with whitespace runs folded.
    return result.exit_code, " ".join(result.output.split())


def test_init_show_token(tmp_path: Path) -> None:
    directory = tmp_path / "id"
    code, output = _run("identity", "init", "--dir", str(directory), "--trust-domain", "mesh.test")
    assert code == 0, output
    assert "anchor (current)" in output and "issuer" in output and "WARNING" not in output

    code, output = _run("identity", "init", "--dir", str(directory))
    assert code == 1 and "refusing to overwrite" in output and "Traceback" not in output

    code, output = _run("identity", "token", "prod/api", "--dir", str(directory), "--ttl", "1h")
    assert code == 0, output
    token = output.split()[-1]
    store = IssuerDirectory(directory)
    claims = verify_token(
        store.token_secret(), token, "spiffe://mesh.test/ns/prod/sa/api", now=time.time()
    )
    assert claims.expires_at - claims.issued_at == 3600


def test_clear_errors(tmp_path: Path) -> None:
    code, output = _run("identity", "show", "--dir", str(tmp_path / "missing"))
    assert code == 1 and "is missing" in output and "Traceback" not in output
    code, output = _run("identity", "init", "--dir", str(tmp_path), "--issuer-ttl", "soon")
    assert code != 0 and "expected a duration like" in output
    _run("identity", "init", "--dir", str(tmp_path))
    code, output = _run("identity", "token", "web", "--dir", str(tmp_path))
    assert code == 1 and "<namespace>/<service-account>" in output


def test_show_warns_before_expiry(tmp_path: Path) -> None:
    soon, later = tmp_path / "soon", tmp_path / "later"
    _run("identity", "init", "--dir", str(soon), "--issuer-ttl", "5d")
    _run("identity", "init", "--dir", str(later), "--issuer-ttl", "20d")
    code, output = _run("identity", "show", "--dir", str(soon))
    # 5 days minus the test's own run time: "4d 23h", or "5d" when rounded up.
    assert code == 0 and re.search(r"WARNING: the issuer expires in (4d 23h|5d) ", output)
    assert "rotate issuer" in output
    code, output = _run("identity", "show", "--dir", str(later))
    assert re.search(r"WARNING: the issuer expires in (19d 23h|20d) ", output)


def test_rotation_commands(tmp_path: Path) -> None:
    directory = str(tmp_path)
    _run("identity", "init", "--dir", directory)
    code, output = _run("identity", "rotate", "anchor", "--dir", directory)
    assert code == 0 and "anchor (previous)" in output and "next step: 2" in output
    code, output = _run("identity", "rotate", "finish", "--dir", directory)
    assert code == 1 and "rotate issuer" in output
    code, output = _run("identity", "rotate", "issuer", "--dir", directory)
    assert code == 0 and "next step: 3" in output
    code, output = _run("identity", "rotate", "finish", "--dir", directory)
    assert code == 1 and "--force" in output
    code, output = _run("identity", "rotate", "finish", "--dir", directory, "--force")
    assert code == 0 and "anchor (previous)" not in output
    assert len(IssuerDirectory(tmp_path).load_bundle().anchors) == 1
