"""`tulle authz`: what it says applies, and how it sums the proxies' counters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tulle.cli import authz as authz_cli
from tulle.cli.app import app
from tulle.codec.promtext import parse
from tulle.control.manifest import parse_manifest

DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"
EXAMPLE = DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]

SA = "spiffe://tulle.local/ns/default/sa"
METRICS = (
    "# TYPE inbound_http_authz_allow_total counter\n"
    'inbound_http_authz_allow_total{server="web-http",policy="web-health-open",client_id=""} 7\n'
    'inbound_http_authz_allow_total{server="web-http",policy="web-admin-frontend",'
    f'client_id="{SA}/frontend"}} 3\n'
    'inbound_http_authz_deny_total{server="web-http",policy="default:deny",'
    f'client_id="{SA}/web"}} 2\n'
    'inbound_http_authz_allow_total{server="web-http",policy="probe",client_id=""} 5\n'
    'inbound_http_requests_total{server="web-http"} 99\n'
)


def test_describe_lists_what_applies_to_one_workload() -> None:
    document = authz_cli.describe(parse_manifest(EXAMPLE).authorization, "web")
    assert [s["name"] for s in document["servers"]] == ["web-http"]
    assert document["servers"][0]["default"] == "deny"
    assert document["default"] == "all-authenticated"
    assert [r["name"] for r in document["routes"]] == ["web-health", "web-admin"]
    assert document["routes"][1]["matches"] == ["POST /admin*"]
    names = [p["name"] for p in document["policies"]]
    assert names == ["web-health-open", "web-admin-frontend", "web-namespace-lan"]
    assert "db-from-web" not in names
    assert document["policies"][2]["requires"][1]["what"].startswith("network 10.0.0.0/8 except")


def test_hits_are_summed_by_server_and_policy() -> None:
    samples = parse(METRICS) * 2  # two proxies with the same counts
    document = authz_cli.describe(parse_manifest(EXAMPLE).authorization, "web")
    authz_cli.attach_hits(document, authz_cli.count_hits(samples))
    by_name = {p["name"]: p for p in document["policies"]}
    assert by_name["web-health-open"]["allow"] == 14
    assert by_name["web-admin-frontend"]["clients"] == {
        "spiffe://tulle.local/ns/default/sa/frontend": {"allow": 6.0, "deny": 0.0}
    }
    others = {o["policy"]: o for o in document["other_decisions"]}
    assert others["default:deny"]["deny"] == 4
    assert others["probe"]["allow"] == 10


def test_the_command_prints_json_and_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mesh.yaml").write_text(EXAMPLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(authz_cli, "fetch_samples", lambda proxy: parse(METRICS))
    runner = CliRunner()
    result = runner.invoke(app, ["authz", "web", "--json", "--proxy-admin", "127.0.0.1:4191"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["proxies"] == ["127.0.0.1:4191"]
    assert {p["name"]: p["allow"] for p in document["policies"]}["web-health-open"] == 7
    table = runner.invoke(app, ["authz", "web", "--proxy-admin", "127.0.0.1:4191"])
    assert table.exit_code == 0, table.output
    assert "web-admin-frontend" in table.output and "default:deny" in table.output


def test_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(app, ["authz", "web"])
    assert missing.exit_code == 1
    assert "cannot read the file" in missing.output
    (tmp_path / "mesh.yaml").write_text(EXAMPLE)
    unknown = runner.invoke(app, ["authz", "nope"])
    assert unknown.exit_code == 1
    assert 'no service named "nope"' in unknown.output
    bad = runner.invoke(app, ["authz", "web", "--proxy-admin", "nowhere"])
    assert bad.exit_code == 1
    assert "bad --proxy-admin" in bad.output
