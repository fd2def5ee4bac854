"""The manifest file source: edits are picked up, broken edits refused, metrics counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tulle.cli.control  # noqa: F401  (registers the commands on `app`)
from tulle.cli.app import app
from tulle.control.manifest import Manifest, ManifestError
from tulle.control.manifest_source import ManifestFileSource
from tulle.control.metrics import ControlMetrics

GOOD = "services:\n  - name: web\n    endpoints: [127.0.0.1:1]\n"
BETTER = "services:\n  - name: web\n    endpoints: [127.0.0.1:2]\n"
BROKEN = "services:\n  - name: web\n    endpoints: [nowhere]\n"


def test_edits_are_applied_and_broken_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD)
    seen: list[Manifest] = []
    metrics = ControlMetrics()
    source = ManifestFileSource(path, seen.append, metrics, poll_interval_s=0.01)
    first = source.load_initial()
    assert first.services["web"].endpoints[0].address == ("127.0.0.1", 1)

    async def scenario() -> list[bool]:
        results = [await source.poll_once()]  # unchanged
        path.write_text(BROKEN)
        results.append(await source.poll_once())
        results.append(await source.poll_once())  # the same broken content: counted once
        path.unlink()
        results.append(await source.poll_once())
        path.write_text(BETTER)
        results.append(await source.poll_once())
        return results

    assert asyncio.run(scenario()) == [False, False, False, False, True]
    assert [m.services["web"].endpoints[0].address for m in seen] == [("127.0.0.1", 2)]
    assert metrics.reload_ok == 2
    assert metrics.reload_error == 2
    rendered = metrics.render()
    assert 'control_manifest_reload_total{result="ok"} 2' in rendered
    assert 'control_manifest_reload_total{result="error"} 2' in rendered
    assert "control_manifest_services 1" in rendered


def test_a_broken_manifest_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(BROKEN)
    source = ManifestFileSource(path, lambda m: None, ControlMetrics())
    with pytest.raises(ManifestError, match=r"mesh.yaml:3: services\[0\].endpoints\[0\]"):
        source.load_initial()


def test_manifest_validate_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    runner = CliRunner()
    ok = runner.invoke(app, ["manifest", "validate", str(good)])
    assert ok.exit_code == 0
    assert "valid, 1 services" in ok.output
    failed = runner.invoke(app, ["manifest", "validate", str(bad)])
    assert failed.exit_code == 1
    assert "bad.yaml:3: services[0].endpoints[0]: bad address 'nowhere'" in failed.output
    assert "Traceback" not in failed.output
