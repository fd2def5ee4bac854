"""Per-request override through real processes: `tulle-backend` honoured only for allowed callers.

`books` splits all its traffic to `books-v1` and lists `books-v2` at weight
0; `requestOverride` trusts the `tester` identity. Two outbound proxies with
real workload certificates (`tester`, `web`) send the same requests: the
tester's header reaches v2, web's is ignored (and counted as refused).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path

import pytest
from meshkit import named_backend, start_control
from support.mesh import Proxy, start_proxy
from support.process import ProcessGroup

pytestmark = pytest.mark.integration

TD = "tulle.test"
TESTER = f"spiffe://{TD}/ns/qa/sa/tester"
WEB = f"spiffe://{TD}/ns/default/sa/web"


def bodies(proxy: Proxy, count: int, **headers: str) -> list[str]:
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=15)
    out = []
    for _ in range(count):
        conn.request("GET", "http://books/", headers=headers)
        response = conn.getresponse()
        out.append(response.read().decode().strip())
        assert response.status == 200, out[-1]
    conn.close()
    return out


def test_only_allowed_identities_pick_the_backend(processes: ProcessGroup, tmp_path: Path) -> None:
    issuer = tmp_path / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", TD],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    v1 = named_backend(processes, "books-v1")
    v2 = named_backend(processes, "books-v2")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: books
    backends: [{{name: books-v1, weight: 100}}, {{name: books-v2, weight: 0}}]
    requestOverride: {{identities: ["spiffe://{TD}/ns/qa/sa/*"]}}
  - name: books-v1
    endpoints: [{v1.addr}]
  - name: books-v2
    endpoints: [{v2.addr}]
"""
    )
    control = start_control(processes, manifest)

    def proxy(identity: str, name: str) -> Proxy:
        return start_proxy(
            processes,
            extra=["--control-addr", control.grpc_addr, "--identity", identity,
                   "--identity-issuer-dir", str(issuer)],
            name=name,
        )  # fmt: skip

    tester = proxy(TESTER, "tester")
    web = proxy(WEB, "web")
    assert set(bodies(tester, 20)) == {"books-v1"}
    assert set(bodies(tester, 20, **{"tulle-backend": "books-v2"})) == {"books-v2"}
    assert set(bodies(web, 20, **{"tulle-backend": "books-v2"})) == {"books-v1"}
    # A name outside the split is not a way to reach other services.
    assert set(bodies(tester, 5, **{"tulle-backend": "elsewhere"})) == {"books-v1"}
    tester_metrics = tester.metrics()
    assert tester_metrics.total("request_override_total", result="applied") == 20
    assert tester_metrics.total("request_override_total", result="refused") == 5
    assert web.metrics().total("request_override_total", result="refused") == 20
