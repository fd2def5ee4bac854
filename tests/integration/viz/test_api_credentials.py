"""The control plane's HTTP API against a hostile caller: writes and tap need the API
token, Host and Origin must be the API's own, writes must be YAML or JSON, merge
never drops what it was not given, and bodies cost bounded work.

Every test drives a real `tulle control` (and the real CLI) over loopback.
"""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.mesh import Backend, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup, http_status
from viz_mesh import API_TOKENS, eventually, start_control

from tulle.control.manifest import load_manifest

pytestmark = pytest.mark.integration

MANIFEST = """\
services:
  - name: books
    endpoints: [127.0.0.1:9001]
  - name: web
    endpoints: [127.0.0.1:9002]
policy:
  defaultPolicy: deny
  servers:
    - {name: books-http, workload: books, port: 9001}
  httpRoutes:
    - name: books-admin
      server: books-http
      matches: [{path: {type: PathPrefix, value: /admin}}]
  authentications:
    - {name: web-only, identities: [spiffe://tulle.local/ns/default/sa/web]}
  authorizationPolicies:
    - name: admin-for-web
      target: {httpRoute: books-admin}
      requiredAuthentications: [web-only]
"""
CHANGE = b"services:\n  - name: books\n    timeout: 3s\n"


@dataclass
class Api:
    url: str
    token: str
    manifest: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], float]:
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        started = time.monotonic()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw), time.monotonic() - started
        finally:
            connection.close()

    def write(self, body: bytes, **headers: str) -> tuple[int, dict[str, Any], float]:
        sent = {"Content-Type": "application/yaml", "Authorization": f"Bearer {self.token}"}
        sent.update({name.replace("_", "-"): value for name, value in headers.items()})
        return self.call("POST", "/api/apply", body, {k: v for k, v in sent.items() if v})


@pytest.fixture
def api(processes: ProcessGroup, tmp_path: Path) -> Iterator[Api]:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(MANIFEST)
    _, _, url = start_control(processes, manifest, "")
    yield Api(url, API_TOKENS[url], manifest)


def test_the_token_file_is_private(api: Api) -> None:
    mode = stat.S_IMODE((api.manifest.parent / "api-token").stat().st_mode)
    assert mode == 0o600


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Authorization": ""}, 401, "/api/apply needs the API token"),
        ({"Authorization": "Bearer wrong"}, 401, "/api/apply needs the API token"),
        ({"Content_Type": "text/plain"}, 415, "must be YAML or JSON"),
        ({"Content_Type": "application/x-www-form-urlencoded"}, 415, "must be YAML or JSON"),
        ({"Content_Type": "multipart/form-data; boundary=x"}, 415, "must be YAML or JSON"),
        ({"Content_Type": ""}, 415, "must be YAML or JSON"),
        ({"Host": "rebind.attacker.example:8084"}, 403, "DNS-rebinding protection"),
        ({"Origin": "http://attacker.example"}, 403, "cross-site requests to /api/apply"),
        ({"Origin": "null"}, 403, "cross-site"),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "text-plain",
        "form",
        "multipart",
        "no-type",
        "foreign-host",
        "foreign-origin",
        "null-origin",
    ],
)
def test_a_write_without_every_credential_is_refused_and_changes_nothing(
    api: Api, headers: dict[str, str], status: int, message: str
) -> None:
    answered, document, _ = api.write(CHANGE, **headers)
    assert answered == status, document
    assert message in document["error"]
    assert api.manifest.read_text() == MANIFEST


def test_a_cross_site_request_as_the_issue_sent_it_is_refused(api: Api) -> None:
    # text/plain, a foreign Origin and a foreign Host, no token: what a web page can send.
    status, _, _ = api.call(
        "POST",
        "/api/apply?mode=merge",
        b"services: []\npolicy: {}\n",
        {"Content-Type": "text/plain", "Origin": "http://evil.example", "Host": "evil.example"},
    )
    assert status == 403
    assert api.manifest.read_text() == MANIFEST


def test_a_write_with_the_token_from_the_apis_own_page_is_applied(api: Api) -> None:
    status, document, _ = api.write(
        CHANGE,
        Origin=f"http://127.0.0.1:{api.port}",
        Content_Type="application/json; charset=utf-8",
    )
    assert status == 200, document
    assert document["changed"] == ["books"]
    assert load_manifest(api.manifest).services["books"].profile.timeout_s == 3.0


def test_an_empty_merge_keeps_the_policy(api: Api) -> None:
    before = load_manifest(api.manifest).authorization
    status, document, _ = api.write(b"services: []\npolicy: {}\n")
    assert status == 200, document
    assert (document["changed"], document["added"]) == ([], [])
    after = load_manifest(api.manifest).authorization
    assert after == before
    assert [p.name for p in after.authorization_policies] == ["admin-for-web"]


def test_tap_needs_the_token_and_reads_do_not(api: Api) -> None:
    for path in ("/api/tap?service=books&duration=1", "/api/top?duration=1"):
        status, document, _ = api.call("GET", path)
        assert status == 401, document
        assert "needs the API token" in document["error"]
    for path in ("/api/stat", "/api/services", "/api/check", "/api"):
        status, _, _ = api.call("GET", path)
        assert status == 200, path
    # Reads keep the DNS-rebinding check too.
    status, document, _ = api.call("GET", "/api/services", headers={"Host": "evil.example"})
    assert status == 403 and "DNS-rebinding" in document["error"]


def test_billion_laughs_are_refused_at_once(api: Api) -> None:
    lines = ["services: []", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    # Padded with comments to the 800 KB of the report.
    body = ("\n".join(lines) + "\n" + "#" * 99 + "\n").encode() * 1
    body += b"".join(f"# padding {i:090d}\n".encode() for i in range(8000))
    status, document, seconds = api.write(body)
    assert status == 422, document
    assert "aliases expand to more than 100000 values" in document["problems"][0]["text"]
    assert seconds < 5.0
    many = (
        b"services: []\nx: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\ny: ["
        + b", ".join([b"*a"] * 100_000)
        + b"]\n"
    )
    status, document, seconds = api.write(many)
    assert status == 422 and "aliases expand" in document["problems"][0]["text"]
    assert seconds < 5.0
    assert api.manifest.read_text() == MANIFEST


def test_a_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, api.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/apply")
        connection.putheader("Content-Type", "application/yaml")
        connection.putheader("Authorization", f"Bearer {api.token}")
        connection.putheader("Content-Length", str(64 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()


def test_the_cli_reads_the_token_of_the_state_dir(
    processes: ProcessGroup, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # `tulle control` without --api-token-file: .tulle/api-token beside the manifest.
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(MANIFEST)
    process = processes.tulle(
        "control-default-token",
        [
            "control",
            "--manifest",
            str(manifest),
            "--grpc-addr",
            f"{LOOPBACK}:0",
            "--admin-addr",
            f"{LOOPBACK}:0",
            "--http-addr",
            f"{LOOPBACK}:0",
        ],
    )
    process.wait_for(lambda: "tulle control ready" in process.output(), "the ready line")
    url = "http://" + process.output().split(" http=", 1)[1].split()[0]
    token_file = tmp_path / ".tulle" / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    change = tmp_path / "change.yaml"
    change.write_bytes(CHANGE)

    def apply(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tulle", "apply", "-f", str(change), "--control", url, *extra],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    refused = apply(elsewhere)
    assert refused.returncode == 1
    assert "needs the API token" in refused.stderr
    applied = apply(tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "changed books" in applied.stdout
    explicit = apply(elsewhere, "--token", token_file.read_text().strip())
    assert explicit.returncode == 0, explicit.stderr


def test_an_empty_merge_leaves_a_forbidden_call_forbidden(
    processes: ProcessGroup, http_backend: Backend, tmp_path: Path
) -> None:
    """The report's sequence through real processes: a call policy denies stays denied
    after `services: []` + `policy: {}` is merged (it went 403 -> 200 within 2 s)."""
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        "services:\n  - name: books\n    endpoints: [127.0.0.1:1]\npolicy:\n  defaultPolicy: deny\n"
    )
    control, grpc_port, url = start_control(processes, manifest, "")
    admin_port = int(control.output().split(" admin=", 1)[1].split()[0].rsplit(":", 1)[1])
    books = start_proxy(
        processes,
        app_addr=http_backend.addr,
        extra=["--control-addr", f"{LOOPBACK}:{grpc_port}", "--workload", "books"],
        name="proxy-books-policy",
    )

    def plain_call() -> int:
        return http_status(*books.inbound, "/status/200", timeout=5.0) or 0

    def reloads() -> float:
        status = http_status(LOOPBACK, admin_port, "/ready")
        assert status == 200
        connection = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=5)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        for line in text.splitlines():
            if line.startswith('control_manifest_reload_total{result="ok"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    eventually(lambda: plain_call() == 403, "the call denied by policy")
    before = reloads()
    api = Api(url, API_TOKENS[url], manifest)
    status, document, _ = api.write(b"services: []\npolicy: {}\n")
    assert status == 200, document
    eventually(lambda: reloads() > before, "the control plane re-read the manifest")
    # Bounded negative check: the old merge turned policy off within 2 s.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert plain_call() == 403
        time.sleep(0.1)
