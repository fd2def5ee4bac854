"""How `tulle up` resolves a manifest into processes, ports and a generated manifest."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import yaml
from support.ports import free_port

from tulle.control.manifest import parse_manifest
from tulle.local.manifest import parse_local_manifest
from tulle.local.plan import PreferredPorts, build_plan, exposed_document

pytestmark = pytest.mark.integration  # allocates ports (binds sockets briefly)

MANIFEST = """\
services:
  - name: api
    protocol: grpc
    endpoints: [127.0.0.1:9999]
    instances:
      command: python -m myapp --listen 127.0.0.1:{port} --id {replica}
      replicas: 2
      env: {MODE: demo}
      identity: spiffe://tulle.local/ns/default/sa/api
    backends: [{name: api-v2, weight: 1}]
  - name: api-v2
    instances:
      command: [tulle, demo, backend, --addr, "127.0.0.1:{port}"]
  - name: other
    endpoints: [127.0.0.1:9998]
"""


def test_instances_become_sidecar_endpoints_and_apps_learn_their_ports(tmp_path: Path) -> None:
    manifest = parse_local_manifest(MANIFEST)
    plan = build_plan(
        manifest,
        yaml.safe_load(MANIFEST),
        manifest_path="mesh.yaml",
        state_dir=tmp_path,
        ingress_port=0,
    )
    assert [i.name for i in plan.instances] == ["api-0", "api-1", "api-v2-0"]
    every_port = [plan.control_grpc_port, plan.control_admin_port, plan.ingress_port]
    for instance in plan.instances:
        every_port += [
            instance.app_port,
            instance.inbound_port,
            instance.outbound_port,
            instance.admin_port,
        ]
    assert len(set(every_port)) == len(every_port)

    generated = yaml.safe_load(plan.generated_files["mesh.generated.yaml"])
    api = generated["services"][0]
    assert "instances" not in api
    assert api["endpoints"][0] == "127.0.0.1:9999"
    assert api["endpoints"][1] == {
        "address": f"127.0.0.1:{plan.instances[0].inbound_port}",
        "labels": {"instance": "api-0"},
        "identity": "spiffe://tulle.local/ns/default/sa/api",
    }
    # What the control plane will serve must itself be a valid manifest.
    parse_manifest(plan.generated_files["mesh.generated.yaml"])

    apps = {p.name: p for p in plan.processes if p.role == "app"}
    api1 = apps["api-1"]
    port = plan.instances[1].app_port
    assert api1.argv == (
        sys.executable,
        "-m",
        "myapp",
        "--listen",
        f"127.0.0.1:{port}",
        "--id",
        "1",
    )
    assert api1.env["PORT"] == str(port)
    assert api1.env["MODE"] == "demo"
    assert api1.env["TULLE_SERVICE"] == "api" and api1.env["TULLE_INSTANCE"] == "api-1"
    outbound = f"127.0.0.1:{plan.instances[1].outbound_port}"
    assert api1.env["http_proxy"] == api1.env["HTTP_PROXY"] == f"http://{outbound}"
    assert api1.env["TULLE_OUTBOUND"] == outbound
    assert api1.env["no_proxy"] == "127.0.0.1,localhost"
    assert apps["api-v2-0"].argv[:3] == (sys.executable, "-m", "tulle")

    sidecars = {p.name: p for p in plan.processes if p.role == "sidecar"}
    argv = sidecars["api-0.proxy"].argv
    assert argv[argv.index("--app-addr") + 1] == f"127.0.0.1:{plan.instances[0].app_port}"
    assert argv[argv.index("--control-addr") + 1] == f"127.0.0.1:{plan.control_grpc_port}"
    assert "http_proxy" not in sidecars["api-0.proxy"].env
    assert plan.processes[0].role == "control"
    assert plan.exposed == ("api", "api-v2", "other")


def test_an_exposed_service_brings_its_split_backends() -> None:
    document = yaml.safe_load(MANIFEST)
    kept = exposed_document(document, ("api",))
    assert [s["name"] for s in kept["services"]] == ["api", "api-v2"]
    assert exposed_document(document, ("other",))["services"][0]["name"] == "other"


def test_the_control_plane_takes_its_default_ports_where_free(tmp_path: Path) -> None:
    # Stand-ins for 8086/9990/8084 that this test owns: two free, one held.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    held = holder.getsockname()[1]
    try:
        grpc, http = free_port(), free_port()
        manifest = parse_local_manifest(MANIFEST)
        plan = build_plan(
            manifest,
            yaml.safe_load(MANIFEST),
            manifest_path="mesh.yaml",
            state_dir=tmp_path,
            ingress_port=0,
            preferred=PreferredPorts(grpc=grpc, admin=held, http=http),
        )
    finally:
        holder.close()
    assert plan.control_grpc_port == grpc
    assert plan.control_http_port == http
    assert plan.control_admin_port not in (held, grpc, http)  # in use: allocated instead
    assert PreferredPorts() == PreferredPorts(grpc=8086, admin=9990, http=8084)
