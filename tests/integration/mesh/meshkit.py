"""Pieces for whole-mesh tests: a named backend process, the control plane, load loops.

`named_backend` is a tiny real HTTP/1.1 server (its own process) that answers
every request with its name after an optional delay, so a test can count which
endpoint served each request and make one endpoint slow; it can also log every
request it reads, so a test can tell which requests reached it. A backend named
`flaky...` fails every other request to `/fail` with a 500. `header_echo`
answers with the value of one request header, to show what a proxy forwarded.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from support.mesh import CONTROL_READY, Proxy, start_proxy
from support.ports import LOOPBACK
from support.process import ManagedProcess, ProcessGroup, http_status

BACKEND_SCRIPT = r"""
import asyncio, sys
name, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) / 1000.0
log_requests = sys.argv[4:5] == ["1"]
seen = [0]
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if log_requests:
                print("seen", head.split(b"\r\n", 1)[0].decode("latin-1"), flush=True)
            fail = False
            if name.startswith("flaky") and b" /fail" in head.split(b"\r\n", 1)[0]:
                seen[0] += 1
                fail = seen[0] % 2 == 1  # every other /fail request fails
            status = b"500 Internal Server Error" if fail else b"200 OK"
            if delay:
                await asyncio.sleep(delay)
            body = name.encode() + b"\n"
            head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

_LISTENING = re.compile(r"listening (\d+)")


@dataclass
class NamedBackend:
    process: ManagedProcess
    name: str
    port: int

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def seen(self) -> list[str]:
        """The request lines it logged (started with `log_requests=True`)."""
        return [
            line.removeprefix("seen ")
            for line in self.process.output().splitlines()
            if line.startswith("seen ")
        ]


def named_backend(
    group: ProcessGroup, name: str, delay_ms: float = 0, port: int = 0, log_requests: bool = False
) -> NamedBackend:
    """With `log_requests`, the backend prints `seen <request line>` for every
    request head it reads, before answering (see `NamedBackend.seen`)."""
    process = group.start(
        name,
        [sys.executable, "-c", BACKEND_SCRIPT, name, str(port), str(delay_ms)]
        + (["1"] if log_requests else []),
    )
    ready = process.wait_for_match(_LISTENING, "listening line")
    return NamedBackend(process, name, int(ready.group(1)))


# Answers `<prefix><the request's `header` value, or ->` on every request of a
# kept-alive connection: a test sees what the last proxy forwarded.
HEADER_ECHO_SCRIPT = r"""
import asyncio, sys
prefix, header = sys.argv[1].encode(), sys.argv[2].lower().encode()
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            value = b"-"
            for line in head.split(b"\r\n")[1:]:
                key, _, rest = line.partition(b":")
                if key.strip().lower() == header:
                    value = rest.strip()
            body = prefix + value
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def header_echo(group: ProcessGroup, name: str, header: str, prefix: str = "") -> str:
    """Start a process running HEADER_ECHO_SCRIPT; its address."""
    process = group.start(name, [sys.executable, "-c", HEADER_ECHO_SCRIPT, prefix, header])
    return f"{LOOPBACK}:{process.wait_for_match(_LISTENING, 'listening line').group(1)}"


@dataclass
class Control:
    process: ManagedProcess
    grpc_port: int
    admin_port: int

    @property
    def grpc_addr(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"


def start_control(
    group: ProcessGroup, manifest: Path, grpc_port: int = 0, name: str = "control"
) -> Control:
    process = group.tulle(
        name,
        ["control", "--manifest", str(manifest), "--grpc-addr", f"{LOOPBACK}:{grpc_port}",
         "--admin-addr", f"{LOOPBACK}:0", "--http-addr", f"{LOOPBACK}:0", "--poll-interval", "0.1"],
    )  # fmt: skip
    ready = process.wait_for_match(CONTROL_READY, "the ready line")
    control = Control(process, int(ready.group(1)), int(ready.group(2)))
    process.wait_for(lambda: http_status(LOOPBACK, control.admin_port, "/ready") == 200, "/ready")
    return control


def workload_proxy(group: ProcessGroup, control: Control, workload: str, app: str) -> Proxy:
    """A proxy for `workload` in front of `app`, following `control`."""
    return start_proxy(
        group,
        app_addr=app,
        extra=["--control-addr", control.grpc_addr, "--workload", workload],
        name=workload,
    )


def write_manifest(path: Path, text: str) -> None:
    """Replace the manifest atomically (as an editor's save would), so a watcher
    never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class Load:
    """Client threads sending GETs through a proxy, counting who answered."""

    url: str
    proxy_url: str
    threads: int = 4
    served_by: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    max_seconds: float = 180.0

    def _run(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.proxy_url}))
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with opener.open(self.url, timeout=10) as response:
                    body = response.read().decode().strip()
                with self._lock:
                    self.served_by[body] += 1
            except urllib.error.HTTPError as exc:
                error = exc.headers.get("tulle-proxy-error", "")
                with self._lock:
                    self.failures.append(f"{exc.code} {error}")
            except OSError as exc:
                with self._lock:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    @property
    def total(self) -> int:
        return sum(self.served_by.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.served_by)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
