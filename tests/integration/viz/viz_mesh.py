"""A small real mesh for the observability tests, and helpers to drive the CLI.

backend <- proxy "books-0" (inbound) <- proxy "web-0" (outbound, fed by
`tulle control`) <- the test's requests. The control plane runs the metrics
API on a free port and scrapes both proxies, found through a targets file in
the format `tulle up` writes (`--scrape-targets`).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from support.mesh import Backend, Proxy, start_proxy
from support.ports import LOOPBACK, free_port
from support.process import ManagedProcess, ProcessGroup

from tulle.core.credentials import ensure_token_file, read_token_file

T = TypeVar("T")
_READY = re.compile(r"tulle control ready grpc=[\d.]+:(\d+) admin=[\d.]+:(\d+) http=[\d.]+:(\d+)")
SCRAPE_INTERVAL = "0.5"


def manifest_text(books_inbound: int, slow_timeout: str = "5s") -> str:
    return (
        "services:\n"
        "  - name: books\n"
        "    port: 8080\n"
        f"    endpoints: [{LOOPBACK}:{books_inbound}]\n"
        "    routes:\n"
        "      - name: slow\n"
        "        matches: [{path: {value: /delay}}]\n"
        f"        timeout: {slow_timeout}\n"
        "      - name: status\n"
        "        matches: [{path: {value: /status}}]\n"
    )


@dataclass
class Mesh:
    control: ManagedProcess
    api_url: str
    web: Proxy
    books: Proxy
    targets_file: Path
    manifest: Path
    # Warm-up requests web-0's proxy answered itself (books not yet discovered):
    # they count on web's outbound side (edges) but never reached books (stat).
    answered_by_web: int = 0
    # The app's port behind books-0 (the port policy servers name).
    books_app_port: int = 0

    def get(self, path: str, timeout: float = 10.0) -> int:
        """A request to `books` through web-0's outbound side; the status."""
        connection = http.client.HTTPConnection(*self.web.outbound, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": "books"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def api(self, path: str) -> Any:
        host, port = self.api_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A CLI command against this mesh, with its API token (TULLE_API_TOKEN)."""
        return subprocess.run(
            [sys.executable, "-m", "tulle", *args, "--control", self.api_url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "TULLE_API_TOKEN": API_TOKENS.get(self.api_url, "")},
        )

    @staticmethod
    def cli_unbound(command: str, control: str) -> subprocess.CompletedProcess[str]:
        """A CLI command against a control URL where nothing may listen."""
        return subprocess.run(
            [sys.executable, "-m", "tulle", command, "--control", control],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def cli_json_unchecked(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """Poll `check` (bounded in time) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


# The API token of each control plane started here, by its API URL.
API_TOKENS: dict[str, str] = {}


def admin_token_file(directory: Path) -> Path:
    """The proxies' admin token (`--admin-token-file`) of the mesh in `directory`."""
    path = directory / "admin-token"
    ensure_token_file(path)
    return path


def start_control(
    group: ProcessGroup, manifest: Path, targets: str, extra: tuple[str, ...] = ()
) -> tuple[ManagedProcess, int, str]:
    """`tulle control` with its API on a free port; (process, gRPC port, API URL).

    Its API token is `<manifest dir>/api-token` (in API_TOKENS), and its tap
    relay sends the proxies' admin token of `admin_token_file(<manifest dir>)`.
    """
    api_token = manifest.parent / "api-token"
    control = group.tulle(
        "control",
        [
            "control",
            "--manifest",
            str(manifest),
            "--grpc-addr",
            f"{LOOPBACK}:0",
            "--admin-addr",
            f"{LOOPBACK}:0",
            "--http-addr",
            f"{LOOPBACK}:{free_port()}",
            "--poll-interval",
            "0.1",
            "--scrape-targets",
            targets,
            "--scrape-interval",
            SCRAPE_INTERVAL,
            "--api-token-file",
            str(api_token),
            "--proxy-admin-token-file",
            str(admin_token_file(manifest.parent)),
            *extra,
        ],
    )
    ready = control.wait_for_match(_READY, "the ready line")
    grpc_port, http_port = int(ready.group(1)), int(ready.group(3))
    api_url = f"http://{LOOPBACK}:{http_port}"
    API_TOKENS[api_url] = read_token_file(api_token)
    return control, grpc_port, api_url


def start_mesh(group: ProcessGroup, backend: Backend, directory: Path, policy: str = "") -> Mesh:
    """The mesh; with `policy` (a manifest's `policy:` section) books-0's
    proxy follows the control plane's inbound policy for workload `books`
    (started after the control plane, which reads the manifest again once
    books-0's port is known)."""
    admin = ["--admin-token-file", str(admin_token_file(directory))]
    manifest = directory / "mesh.yaml"
    targets_file = directory / "targets.txt"
    if policy:
        # A placeholder endpoint until books-0 has its port.
        manifest.write_text(manifest_text(free_port()) + policy)
        targets_file.write_text("")
        control, grpc_port, api_url = start_control(group, manifest, str(targets_file))
        follow = ["--control-addr", f"{LOOPBACK}:{grpc_port}", "--workload", "books"]
        books = start_proxy(
            group, app_addr=backend.addr, extra=[*follow, *admin], name="proxy-books"
        )
        manifest.write_text(manifest_text(books.inbound_port) + policy)
    else:
        books = start_proxy(group, app_addr=backend.addr, extra=admin, name="proxy-books")
        manifest.write_text(manifest_text(books.inbound_port))
        targets_file.write_text(f"books=books-0={LOOPBACK}:{books.admin_port}\n")
        control, grpc_port, api_url = start_control(group, manifest, str(targets_file))
    web = start_proxy(
        group, extra=["--control-addr", f"{LOOPBACK}:{grpc_port}", *admin], name="proxy-web"
    )
    # The mesh grows: the control plane re-reads the targets file.
    targets_file.write_text(
        f"web=web-0={LOOPBACK}:{web.admin_port}\nbooks=books-0={LOOPBACK}:{books.admin_port}\n"
    )
    return Mesh(control, api_url, web, books, targets_file, manifest, books_app_port=backend.port)
