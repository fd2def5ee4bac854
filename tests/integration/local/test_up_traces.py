"""`tulle up --trace-receiver`: a receiver beside the mesh, every proxy exporting
to it; a call through the ingress shows as two spans, parent and child."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from up_harness import UpRun, http_get, port_of

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: hello
    protocol: http/1.1
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
"""


def test_up_runs_a_trace_receiver_every_proxy_exports_to(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(MANIFEST)
    run = UpRun(
        [str(manifest), "--ingress-port", "0", "--no-default-ports", "--trace-receiver"],
        tmp_path / "state",
        tmp_path,
    )
    try:
        state = run.wait_ready()
        found = re.search(r"traces: http://127\.0\.0\.1:(\d+)/traces", run.read_output())
        assert found, run.read_output()
        ingress = port_of(state["ingress"]["addr"])
        trace_id = "e" * 32
        status, _ = http_get(
            ingress, "/", {"Host": "hello", "traceparent": f"00-{trace_id}-{'1' * 16}-01"}
        )
        assert status == 200
        spans: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = http_get(int(found.group(1)), "/traces")
            traces = json.loads(body)["traces"]
            spans = next((t["spans"] for t in traces if t["trace_id"] == trace_id), [])
            if len(spans) >= 2:
                break
            time.sleep(0.2)
        by_kind = {span["kind"]: span for span in spans}
        assert set(by_kind) == {2, 3}, spans  # SERVER (hello's sidecar), CLIENT (ingress)
        assert by_kind[3]["parent_span_id"] == "1" * 16
        assert by_kind[2]["parent_span_id"] == by_kind[3]["span_id"]
        assert by_kind[2]["service"] == "hello"
        lines = (run.state_dir / "traces.jsonl").read_text().splitlines()
        assert sum(1 for line in lines if json.loads(line)["trace_id"] == trace_id) == 2
    finally:
        run.close()
