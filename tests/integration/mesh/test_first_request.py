"""The first request for a name waits for discovery: split services included.

A proxy learns a service's endpoints (`Destination.Get`) and its profile, which
carries the traffic split (`Destination.GetProfile`), on two streams whose
first answers arrive in either order. A split's apex service usually has no
endpoints of its own, so a proxy that routed the first request as soon as the
endpoints stream answered sent it to the apex's empty endpoint set: `503
no-endpoints` although every backend was live. Each round here starts a fresh
proxy, lets it resolve another service first (so its channel to the control
plane is warm and the race is tight), then calls four never-seen split
services at once; every call must be answered by a backend.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from meshkit import named_backend, start_control, write_manifest
from support.mesh import start_proxy
from support.process import ProcessGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPLITS = 4
ROUNDS = 10


def _manifest(stable: str, canary: str, plain: str) -> str:
    lines = [
        "services:",
        "  - name: warm",
        f"    endpoints: [{plain}]",
        "  - name: stable",
        f"    endpoints: [{stable}]",
        "  - name: canary",
        f"    endpoints: [{canary}]",
    ]
    for index in range(SPLITS * ROUNDS):
        lines += [
            f"  - name: split-{index}",
            "    backends:",
            "      - {name: stable, weight: 50}",
            "      - {name: canary, weight: 50}",
        ]
    return "\n".join(lines) + "\n"


def _get(opener: urllib.request.OpenerDirector, url: str) -> str:
    try:
        with opener.open(url, timeout=15) as response:
            return f"{response.status} {response.read().decode().strip()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.headers.get('tulle-proxy-error', '')}"
    except OSError as exc:
        return repr(exc)


def test_first_requests_for_fresh_split_services_wait_for_discovery(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    stable = named_backend(processes, "stable")
    canary = named_backend(processes, "canary")
    plain = named_backend(processes, "plain")
    path = tmp_path / "mesh.yaml"
    write_manifest(path, _manifest(stable.addr, canary.addr, plain.addr))
    control = start_control(processes, path)
    failures: list[str] = []
    for round_index in range(ROUNDS):
        proxy = start_proxy(
            processes, extra=["--control-addr", control.grpc_addr], name=f"proxy-{round_index}"
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy.outbound_url})
        )
        assert _get(opener, "http://warm/") == "200 plain"
        names = [f"split-{round_index * SPLITS + i}" for i in range(SPLITS)]
        with ThreadPoolExecutor(SPLITS) as pool:
            urls = [f"http://{name}/" for name in names]
            answers = list(pool.map(_get, [opener] * SPLITS, urls))
        for name, answer in zip(names, answers, strict=True):
            if answer not in ("200 stable", "200 canary"):
                failures.append(f"round {round_index}, {name}: {answer}")
        proxy.process.stop()
    assert failures == [], failures
