"""The retry rule through real processes: an endpoint killed with SIGKILL under load.

The route leaves `retryable` absent, so (docs/manifest.md) idempotent requests
that may have reached the dead endpoint are retried elsewhere, requests it
never received are always retried, and a POST it may have run is never sent
again: the client gets `502 upstream-reset` for it, and no backend sees it
twice. Backends log every request line they read, so the test knows which
requests reached which endpoint, the killed one included. The same holds
when the endpoints are sidecars over mTLS and the app behind one dies: the
caller's proxy reads the sidecar's `502` (`upstream-reset`, `connect-refused`)
as the failure it reports.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from meshkit import NamedBackend, named_backend, start_control, wait_until, write_manifest
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GET_THREADS = 4
POST_THREADS = 8
DELAY_MS = 300  # long enough that several requests are in flight on each endpoint


def _manifest(addrs: list[str]) -> str:
    return (
        "services:\n"
        "  - name: books\n"
        f"    endpoints: [{', '.join(addrs)}]\n"
        "    routes:\n"
        "      - name: all\n"
        "        matches: [{path: {value: /}}]\n"
        "        timeout: 10s\n"
    )


@dataclass
class Outcome:
    method: str
    path: str
    status: int
    detail: str  # the backend's name, or the proxy's error reason


@dataclass
class Clients:
    """Threads sending GET /get/N or POST /post/N (empty body) through a proxy."""

    proxy: Proxy
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, index: int, method: str) -> None:
        deadline = time.monotonic() + 120
        number = 0
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            number += 1
            path = f"/{method.lower()}/{index}-{number}"
            if connection is None:
                connection = http.client.HTTPConnection(*self.proxy.outbound, timeout=15)
            try:
                body = b"" if method == "POST" else None
                connection.request(method, f"http://books{path}", body=body)
                response = connection.getresponse()
                text = response.read().decode().strip()
                detail = response.headers.get("tulle-proxy-error") or text
                outcome = Outcome(method, path, response.status, detail)
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = Outcome(method, path, 0, repr(exc))
                connection.close()
                connection = None
            with self._lock:
                self.outcomes.append(outcome)
        if connection is not None:
            connection.close()

    def __enter__(self) -> Clients:
        methods = ["GET"] * GET_THREADS + ["POST"] * POST_THREADS
        for index, method in enumerate(methods):
            thread = threading.Thread(target=self._run, args=(index, method), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)


def _kill_under_load(proxy: Proxy, victim: NamedBackend) -> list[Outcome]:
    with Clients(proxy) as clients:
        wait_until(lambda: len(victim.seen()) >= 20, 60, "the victim to take traffic")
        victim.process.signal(signal.SIGKILL)
        victim.process.wait_exit(10)
        killed_at = clients.count()
        wait_until(lambda: clients.count() >= killed_at + 150, 90, "150 more requests")
    return clients.outcomes


def _check(outcomes: list[Outcome], backends: list[NamedBackend], victim: NamedBackend) -> None:
    seen_by: dict[str, list[str]] = {}
    for backend in backends:
        for line in backend.seen():
            method, target, _ = line.split(" ")
            seen_by.setdefault(f"{method} {target.removeprefix('http://books')}", []).append(
                backend.name
            )
    # Requests the victim read but never answered: in flight when it died.
    answered_by_victim = {f"{o.method} {o.path}" for o in outcomes if o.detail == victim.name}
    in_flight = {
        key
        for key, names in seen_by.items()
        if victim.name in names and key not in answered_by_victim
    }
    assert any(key.startswith("POST ") for key in in_flight), (
        "no POST was in flight on the killed endpoint; the test proved nothing",
        sorted(in_flight),
    )

    failed_gets = [o for o in outcomes if o.method == "GET" and o.status != 200]
    assert failed_gets == [], failed_gets[:5]
    bad_posts = [
        o
        for o in outcomes
        if o.method == "POST"
        and not (o.status == 200 or (o.status == 502 and o.detail == "upstream-reset"))
    ]
    assert bad_posts == [], bad_posts[:5]
    # No POST reached two backends (or one twice): none was replayed.
    replayed = {key: names for key, names in seen_by.items() if key.startswith("POST ")}
    replayed = {key: names for key, names in replayed.items() if len(names) > 1}
    assert replayed == {}, replayed
    # A POST the victim had read is answered 502, never by another backend.
    reset_posts = {f"POST {o.path}" for o in outcomes if o.method == "POST" and o.status == 502}
    assert {key for key in in_flight if key.startswith("POST ")} <= reset_posts
    # GETs in flight on the victim were retried elsewhere.
    get_outcome = {f"GET {o.path}": o.detail for o in outcomes if o.method == "GET"}
    for key in in_flight:
        if key.startswith("GET ") and key in get_outcome:
            assert get_outcome[key] != victim.name, (key, get_outcome[key])
    assert Counter(o.status for o in outcomes)[200] > 150


def test_killed_endpoint_retries_idempotent_requests_and_never_replays_posts(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    backends = [
        named_backend(processes, name, delay_ms=DELAY_MS, log_requests=True)
        for name in ("a", "b", "c")
    ]
    path = tmp_path / "mesh.yaml"
    write_manifest(path, _manifest([b.addr for b in backends]))
    control = start_control(processes, path)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr])
    _check(_kill_under_load(proxy, backends[0]), backends, backends[0])


def test_killed_app_behind_a_meshed_sidecar_follows_the_same_rule(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    """The endpoints are sidecars (mTLS) in front of the apps; the app dies,
    its sidecar answers `502 upstream-reset` (or `connect-refused`), and the
    caller's proxy applies the rule as if it had seen the failure itself."""
    issuer = tmp_path / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", "tulle.test"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    books_id = "spiffe://tulle.test/ns/default/sa/books"
    web_id = "spiffe://tulle.test/ns/default/sa/web"
    identity = ["--identity-issuer-dir", str(issuer), "--identity"]
    backends = [
        named_backend(processes, name, delay_ms=DELAY_MS, log_requests=True)
        for name in ("a", "b", "c")
    ]
    sidecars = [
        start_proxy(
            processes, app_addr=b.addr, extra=[*identity, books_id], name=f"sidecar-{b.name}"
        )
        for b in backends
    ]
    endpoints = [f"{LOOPBACK}:{s.inbound_port}@{books_id}" for s in sidecars]
    proxy = start_proxy(
        processes, static_dst={"books": endpoints}, extra=[*identity, web_id], name="web"
    )
    _check(_kill_under_load(proxy, backends[0]), backends, backends[0])
