"""`tulle up --isolated`: every instance in its own network namespace, captured by
`tulle init`'s rules, its app with no proxy setting; and nothing left behind,
even after `kill -9` of `tulle up`.

The end-to-end tests need root, `ip`, `iptables` and `setpriv` (skipped
without them, failed under CI). Everything they create is named after the
test's own state directory, so they touch nothing else of the machine; the
excluded-port and server-speaks-first cases of capture itself are in
tests/integration/proxy/test_transparent_capture.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from support.netns import require_netns
from support.tools import find_binary, missing
from up_harness import UpRun, http_get, metric_sum, port_of, process_named

from tulle.control.manifest import parse_manifest
from tulle.local import isolation
from tulle.local.isolation import plan_network
from tulle.local.manifest import parse_local_manifest
from tulle.local.plan import build_plan, instance_names

pytestmark = pytest.mark.integration

T = TypeVar("T")
READY_TIMEOUT_S = 150.0
TRAFFIC_TIMEOUT_S = 90.0
CLI_TIMEOUT_S = 60.0
PROXY_ENV = {"http_proxy", "https_proxy", "no_proxy", "all_proxy", "grpc_proxy"}
BANNER = b"220 ready\r\n"  # what `tulle demo backend --mode banner` says first

TINY_MANIFEST = """\
services:
  - name: hello
    protocol: http/1.1
    instances:
      command: tulle demo backend --addr 127.0.0.1:{port}
  - name: greeter
    protocol: opaque
    instances:
      command: tulle demo backend --mode banner --addr 127.0.0.1:{port}
"""


def eventually(check: Callable[[], T | None], what: str, timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s} s: {what} (last: {last!r})")


def require_isolation() -> None:
    require_netns()
    for tool, package in (("iptables", "iptables"), ("setpriv", "util-linux")):
        if find_binary(tool) is None:
            missing(tool, f"apt-get install -y {package}")


def tulle(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tulle", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


def ip_lines(*args: str) -> list[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.splitlines()


def left_behind(tag: str) -> list[str]:
    """Everything on the host named after this mesh: namespaces, links, hosts dirs, rules."""
    found = [line for line in ip_lines("netns", "list") if tag in line]
    found += [line for line in ip_lines("-o", "link", "show") if tag in line]
    with contextlib.suppress(FileNotFoundError):
        found += [str(p) for p in isolation.ETC_NETNS.iterdir() if tag in p.name]
    for save in ("iptables-nft-save", "iptables-legacy-save"):
        if find_binary(save) is not None:
            rules = subprocess.run([save], capture_output=True, text=True, timeout=30).stdout
            found += [f"{save}: {line}" for line in rules.splitlines() if tag in line]
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def same_netns(pid: int, name: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{name}").st_ino


def in_namespace(name: str, code: str) -> subprocess.CompletedProcess[str]:
    """Python run by `ip netns exec` (so with the namespace's /etc/hosts), as root:
    an app of the namespace that knows nothing of the mesh."""
    return subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@contextlib.contextmanager
def isolated_up(argv: list[str], state_dir: Path, cwd: Path) -> Iterator[UpRun]:
    run = UpRun(argv, state_dir, cwd)
    try:
        yield run
    finally:
        run.close()
        # Whatever the test did: the network goes too (a no-op after a clean stop).
        tulle(state_dir, "down")


def test_isolated_plan_runs_each_instance_in_its_namespace(tmp_path: Path) -> None:
    manifest = parse_local_manifest(TINY_MANIFEST)
    raw = yaml.safe_load(TINY_MANIFEST)
    network = plan_network(tmp_path, instance_names(manifest), list(manifest.mesh.services), [])
    plan = build_plan(
        manifest,
        raw,
        manifest_path="mesh.yaml",
        state_dir=tmp_path,
        ingress_port=0,
        mtls=False,
        network=network,
    )
    by_name = {p.name: p for p in plan.processes}
    hello = network.namespace("hello-0")
    app = by_name["hello-0"]
    assert list(app.argv[:4]) == ["ip", "netns", "exec", hello.name]
    # No proxy setting of any kind in an isolated app's environment.
    assert not {k.lower() for k in app.env} & PROXY_ENV
    assert "TULLE_OUTBOUND" not in app.env and app.env["PORT"] == str(isolation.APP_PORT)
    assert app.netns == hello.name and app.ready_port == isolation.APP_PORT
    sidecar = by_name["hello-0.proxy"]
    argv = list(sidecar.argv)
    assert argv[:4] == ["ip", "netns", "exec", hello.name]
    assert argv[argv.index("--reuid") + 1] == str(isolation.PROXY_UID)
    assert argv[argv.index("--control-addr") + 1].startswith(network.host_address + ":")
    assert argv[argv.index("--inbound-addr") + 1] == "0.0.0.0:4143"
    assert sidecar.ready_host == hello.address
    control = by_name["control"]
    assert control.argv[control.argv.index("--grpc-addr") + 1].startswith(network.host_address)
    generated = yaml.safe_load(plan.generated_files["mesh.generated.yaml"])
    services = {s["name"]: s for s in generated["services"]}
    assert [e["address"] for e in services["hello"]["endpoints"]] == [
        f"{hello.address}:{isolation.APP_PORT}"
    ]
    # The virtual address is a name of the same service (lookups by IP:PORT).
    alias = services[network.virtual["hello"]]
    assert alias["endpoints"] == services["hello"]["endpoints"]
    parse_manifest(plan.generated_files["mesh.generated.yaml"])  # still a valid manifest


def test_demo_shop_isolated_is_meshed_and_cleaned_after_kill_9(tmp_path: Path) -> None:
    require_isolation()
    state_dir = tmp_path / "state"
    argv = ["--isolated", "--ingress-port", "0", "--no-default-ports"]
    with isolated_up(argv, state_dir, tmp_path) as mesh:
        state = mesh.wait_ready(READY_TIMEOUT_S)
        network = state["isolation"]
        tag = network["bridge"].removeprefix("tulle-")
        assert set(network["namespaces"]) == {
            "web-0", "catalog-0", "catalog-1", "cart-0", "payments-0", "loadgen-0",
        }  # fmt: skip
        for name, netns in network["namespaces"].items():
            app = process_named(state, name)
            env = environ_of(app["pid"])
            assert not {k.lower() for k in env} & PROXY_ENV, (name, env)
            assert not {"TULLE_OUTBOUND", "TULLE_PROXY_ADMIN"} & set(env)
            assert same_netns(app["pid"], netns)
            assert uid_of(app["pid"]) != isolation.PROXY_UID
            proxy = process_named(state, f"{name}.proxy")
            assert same_netns(proxy["pid"], netns)
            assert uid_of(proxy["pid"]) == isolation.PROXY_UID

        # Every call of the shop, on every edge, meshed over mTLS.
        wanted = {("loadgen", "web"), ("web", "catalog"), ("web", "cart"), ("web", "payments")}

        def edges() -> dict[tuple[str, str], dict[str, Any]] | None:
            done = tulle(state_dir, "edges", "--json")
            if done.returncode != 0:
                return None
            rows = {(r["src"], r["dst"]): r for r in json.loads(done.stdout)["rows"]}
            busy = {k: r for k, r in rows.items() if r["requests"] > 0}
            # Retried: 10 % of catalog lookups fail once and are replayed.
            retried = rows.get(("web", "catalog"), {}).get("retries", 0) > 0
            return rows if wanted <= set(busy) and retried else None

        rows = eventually(edges, f"traffic on {sorted(wanted)}", TRAFFIC_TIMEOUT_S)
        for src, dst in wanted:
            row = rows[(src, dst)]
            assert row["server_ids"] == [f"spiffe://tulle.local/ns/default/sa/{dst}"], row
            # A response the caller's proxy made itself (a timeout, a failed
            # connection on a busy machine) has no peer, so it counts as not
            # TLS; any other is an answer from the peer, over mTLS.
            assert row["secured"] or not plaintext_answers(state, src), row
        assert set(rows) <= wanted | {("ingress", k[1]) for k in rows}, rows
        stat = json.loads(tulle(state_dir, "stat", "--json").stdout)["rows"]
        for row in stat:
            if row["requests"] and row["service"] != "ingress":
                assert row["tls_share"] == 1.0, row

        # Balanced: both catalog replicas answer (each one's inbound counts).
        for name in ("catalog-0", "catalog-1"):
            instance = next(i for i in state["instances"] if i["name"] == name)
            host, port = instance["admin"].rsplit(":", 1)
            metrics = http_get_at(host, int(port), "/metrics")
            assert metric_sum(metrics, "response_total", direction="inbound", tls="true") > 0

        # tap shows the calls, with the caller's identity.
        tapped = tulle(state_dir, "tap", "catalog", "-n", "3", "--json", "-d", "30")
        events = [json.loads(line) for line in tapped.stdout.splitlines() if line.strip()]
        calls = [e for e in events if e.get("kind") == "event"]
        assert calls, tapped.stdout + tapped.stderr
        assert all(e["tls"] and e["client_id"].endswith("/sa/web") for e in calls), calls

        # From outside, through the ingress (host namespace -> a namespace).
        status, _ = http_get(port_of(state["ingress"]["addr"]), "/", {"Host": "web"})
        assert status == 200

        # kill -9: nothing of tulle up runs its clean-up.
        os.kill(mesh.process.pid, signal.SIGKILL)
        mesh.process.wait(timeout=10)
        assert left_behind(tag), "the network should outlive a killed tulle up"
        down = tulle(state_dir, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "removed bridge" in down.stdout
        assert left_behind(tag) == []
        assert mesh.wait_gone() == []
        assert not (state_dir / isolation.RECORD_FILE).exists()


def plaintext_answers(state: dict[str, Any], service: str) -> list[str]:
    """Outbound responses of `service`'s proxies that came from a peer without mTLS."""
    found = []
    for instance in state["instances"]:
        if instance["service"] != service:
            continue
        host, port = instance["admin"].rsplit(":", 1)
        for line in http_get_at(host, int(port), "/metrics").splitlines():
            outbound = line.startswith("response_total{") and 'direction="outbound"' in line
            plaintext = 'tls="false"' in line and 'error="' not in line
            if outbound and plaintext and not line.endswith(" 0"):
                found.append(line)
    return found


def http_get_at(host: str, port: int, path: str) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def read_banner_by_name(netns: str, name: str, port: int) -> subprocess.CompletedProcess[str]:
    code = (
        "import socket,sys\n"
        f"s = socket.create_connection(({name!r}, {port}), timeout=20)\n"
        "data = b''\n"
        "while not data.endswith(b'\\r\\n'):\n"
        "    chunk = s.recv(100)\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "sys.stdout.write(repr(data))\n"
    )
    return in_namespace(netns, code)


def test_next_up_cleans_after_kill_9_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    require_isolation()
    manifest = tmp_path / "mesh.yaml"
    # The manifest's setting, not the flag, this time.
    manifest.write_text("isolated: true\n" + TINY_MANIFEST)
    state_dir = tmp_path / "state"
    argv = [str(manifest), "--ingress-port", "0", "--no-default-ports"]
    first = UpRun(argv, state_dir, tmp_path)
    try:
        state = first.wait_ready(READY_TIMEOUT_S)
        tag = state["isolation"]["bridge"].removeprefix("tulle-")
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        assert left_behind(tag)
    except BaseException:
        first.close()
        tulle(state_dir, "down")
        raise
    first.close()  # its processes (the parent-death signal stopped them); not the network
    with isolated_up(argv, state_dir, tmp_path) as second:
        # The killed one's state.json says "ready" too: wait for this one's.
        state = eventually(
            lambda: (
                (s := second.wait_ready(READY_TIMEOUT_S))["supervisor_pid"] == second.process.pid
                and s
            ),
            "the second tulle up ready",
            READY_TIMEOUT_S,
        )
        # Ready at all: it removed the first one's network (recreating the same
        # names over it fails with "exists already").
        hello = state["isolation"]["namespaces"]["hello-0"]
        # A server-speaks-first protocol, by name, from an app of another
        # namespace: captured, balanced over mTLS, the banner passes.
        greeter_ns = state["isolation"]["namespaces"]["greeter-0"]
        done = read_banner_by_name(hello, "greeter", 2525)
        assert done.returncode == 0 and done.stdout == repr(BANNER), done.stderr
        instances = {i["name"]: i for i in state["instances"]}
        greeter_app = instances["greeter-0"]["app"]
        # Routed by discovery (the name's virtual address is the service), not passed through.
        host, port = instances["hello-0"]["admin"].rsplit(":", 1)
        outbound = http_get_at(host, int(port), "/metrics")
        assert metric_sum(outbound, "tcp_open_total", peer="dst", target_addr=greeter_app) >= 1
        assert metric_sum(outbound, "outbound_passthrough_total") == 0
        # And through greeter's inbound (captured on its app's port) to its app.
        host, port = instances["greeter-0"]["admin"].rsplit(":", 1)
        inbound = http_get_at(host, int(port), "/metrics")
        app_addr = f"127.0.0.1:{isolation.APP_PORT}"
        assert metric_sum(inbound, "tcp_open_total", direction="inbound", target_addr=app_addr) >= 1
        assert greeter_ns != hello
        # Ctrl-C: a normal stop removes everything.
        os.kill(second.process.pid, signal.SIGINT)
        second.process.wait(timeout=60)
        assert left_behind(tag) == []
        assert second.wait_gone() == []


def test_isolated_without_root_is_a_clear_error(tmp_path: Path) -> None:
    setpriv = find_binary("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("runs `tulle up --isolated` as another uid, which needs root and setpriv")
    done = subprocess.run(
        [setpriv, "--reuid", "2103", "--regid", "2103", "--clear-groups",
         "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
         sys.executable, "-m", "tulle", "up", "--isolated", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "--isolated needs root" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s" / isolation.RECORD_FILE).exists()
