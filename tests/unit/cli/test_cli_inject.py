"""`tulle inject` (offline, on YAML), run in-process with typer's runner."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

import tulle.cli.inject  # noqa: F401  (registers the commands)
from tulle.cli.app import app
from tulle.identity.store import BUNDLE_FILE, IssuerDirectory

# Click keeps stderr apart: stdout must stay YAML that kubectl can apply.
runner = CliRunner()

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: app, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    metadata: {annotations: {tulle.io/inject: disabled}}
    spec:
      containers: [{name: job, image: app}]
"""


def test_inject_reads_stdin_and_writes_applyable_yaml(tmp_path: Path) -> None:
    issuer = IssuerDirectory(tmp_path / "id")
    issuer.init("cluster.local", now=time.time())
    result = runner.invoke(
        app,
        ["inject", "-", "--identity-dir", str(tmp_path / "id"), "--image", "tulle:t"],
        input=MANIFEST,
    )
    assert result.exit_code == 0, result.stderr
    deployment, service, job = yaml.safe_load_all(result.stdout)
    spec = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["tulle-proxy", "web"]
    anchors = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert anchors["TULLE_PROXY_TRUST_ANCHORS"] == issuer.file(BUNDLE_FILE).read_text()
    assert service["kind"] == "Service" and "template" not in service["spec"]
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["job"]
    assert "deployment/web injected" in result.stderr
    assert "job/once skipped (pod annotated tulle.io/inject: disabled)" in result.stderr
    # Native sidecars on request.
    native = runner.invoke(
        app,
        ["inject", "-", "--identity-dir", str(tmp_path / "id"), "--native-sidecar"],
        input=MANIFEST,
    )
    spec = next(yaml.safe_load_all(native.stdout))["spec"]["template"]["spec"]
    assert spec["initContainers"][1]["restartPolicy"] == "Always"


def test_inject_errors_are_one_clear_line(tmp_path: Path) -> None:
    no_anchors = runner.invoke(app, ["inject", "-"], input=MANIFEST)
    assert no_anchors.exit_code == 2 and "trust anchors" in no_anchors.stderr
    bundle = tmp_path / "bundle.pem"
    IssuerDirectory(tmp_path / "id").init("cluster.local", now=time.time())
    bundle.write_bytes(IssuerDirectory(tmp_path / "id").file(BUNDLE_FILE).read_bytes())
    args = ["inject", "-", "--trust-anchors", str(bundle)]
    not_yaml = runner.invoke(app, args, input="a: [b")
    assert not_yaml.exit_code == 1 and "is not YAML" in not_yaml.stderr
    bad = MANIFEST.replace("labels: {app: web}", "annotations: {tulle.io/skip-subnets: nope}")
    refused = runner.invoke(app, args, input=bad)
    assert refused.exit_code == 1 and "nope" in refused.stderr
    assert refused.stdout == ""
