"""`tulle init` and transparent capture, for real: two network namespaces made
here (a veth pair, 10.231.0.0/24), real iptables rules in them (both
backends where the machine has them), real backends and real proxies running
as the sidecar uid 2102.

The app in namespace a calls a server in namespace b by its IP:port and
knows nothing of the mesh: no proxy setting, no Host trick.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.mesh import Metrics
from support.netns import (
    Pair,
    as_uid,
    in_netns,
    iptables_backends,
    netns_pair,
    require_netns,
    run,
    run_in,
)
from support.process import ManagedProcess, ProcessGroup, http_status
from support.tools import missing

PROXY_UID = 2102
APP_PORT = 8080
BANNER_PORT = 2525
IGNORED_PORT = 9443
ADMIN = ("127.0.0.1", 4191)
BANNER = b"220 ready\r\n"  # what `tulle demo backend --mode banner` says first
IO_TIMEOUT_S = 20.0


def _backends() -> list[str]:
    found = iptables_backends()
    return found or ["iptables-missing"]


@pytest.fixture(params=_backends())
def firewall(request: pytest.FixtureRequest) -> str:
    require_netns()
    name: str = request.param
    if name == "iptables-missing":
        missing("iptables", "apt-get install -y iptables")
    return name


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_netns()
    with netns_pair("cap") as made:
        yield made


def tulle_init(ns: str, firewall: str, *args: str, uid: int | None = None) -> str:
    done = run(
        ns, [sys.executable, "-m", "tulle", "init", "--firewall-bin", firewall, *args], uid=uid
    )
    if uid is None:
        assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def start_backend(
    group: ProcessGroup, ns: str, mode: str, port: int, host: str = "0.0.0.0"
) -> ManagedProcess:
    process = group.start(
        f"backend-{mode}-{ns}",
        in_netns(ns, [sys.executable, "-m", "tulle", "demo", "backend", "--addr", f"{host}:{port}",
                      "--mode", mode]),
    )  # fmt: skip
    process.wait_for(lambda: "listening" in process.output(), "listening line")
    return process


def start_sidecar(group: ProcessGroup, ns: str, *extra: str) -> ManagedProcess:
    """`tulle proxy` with its default ports, as uid 2102 (the uid `tulle init` exempts)."""
    argv = [sys.executable, "-m", "tulle", "proxy", "--app-addr", f"127.0.0.1:{APP_PORT}"]
    process = group.start(
        f"proxy-{ns}",
        in_netns(ns, as_uid(PROXY_UID, [*argv, *extra])),
    )
    process.wait_for(
        lambda: run_in(ns, lambda: http_status(*ADMIN, "/ready")) == 200, "GET /ready = 200"
    )
    return process


def metrics(ns: str) -> Metrics:
    def scrape() -> str:
        with urllib.request.urlopen(f"http://{ADMIN[0]}:{ADMIN[1]}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text

    return Metrics(run_in(ns, scrape))


def http_get(ip: str, port: int, path: str = "/") -> tuple[int, bytes]:
    """A plain HTTP client, as an app that knows nothing of the mesh."""
    conn = http.client.HTTPConnection(ip, port, timeout=IO_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def read_banner(ip: str, port: int) -> bytes:
    """Connect and send nothing: the server speaks first."""
    with socket.create_connection((ip, port), timeout=IO_TIMEOUT_S) as sock:
        got = b""
        deadline = time.monotonic() + IO_TIMEOUT_S
        while not got.endswith(b"\r\n") and time.monotonic() < deadline:
            chunk = sock.recv(1024)
            if not chunk:
                break
            got += chunk
        return got


def echo(ip: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((ip, port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def nat_rules(ns: str, firewall: str) -> list[str]:
    done = run(ns, [f"{firewall}-save", "-t", "nat"])
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("-A ")]


def test_init_is_idempotent_and_remove_undoes_it(pair: Pair, firewall: str) -> None:
    printed = tulle_init(pair.a, firewall, "--outbound-ports-to-ignore", "443")
    assert f"{firewall} -t nat -A TULLE_OUTBOUND -p tcp --dport 443 -j RETURN" in printed
    first = nat_rules(pair.a, firewall)
    tulle_init(pair.a, firewall, "--outbound-ports-to-ignore", "443")
    assert nat_rules(pair.a, firewall) == first  # twice: one set of rules
    assert len([r for r in first if r.startswith(("-A PREROUTING", "-A OUTPUT"))]) == 2
    assert any("--uid-owner 2102" in r for r in first)
    # Changed settings replace the rules (443 no longer ignored).
    tulle_init(pair.a, firewall)
    assert not any("--dport 443" in r for r in nat_rules(pair.a, firewall))
    tulle_init(pair.a, firewall, "--remove")
    assert not any("TULLE" in r for r in nat_rules(pair.a, firewall))
    saved = run(pair.a, [f"{firewall}-save", "-t", "nat"]).stdout
    assert "TULLE_" not in saved
    # Removing again is not an error.
    tulle_init(pair.a, firewall, "--remove")


def test_init_without_net_admin_is_a_clear_error(pair: Pair, firewall: str) -> None:
    done = run(
        pair.a,
        [sys.executable, "-m", "tulle", "init", "--firewall-bin", firewall],
        uid=PROXY_UID,
    )
    assert done.returncode == 1
    assert "needs root or CAP_NET_ADMIN" in done.stderr
    assert "Traceback" not in done.stderr


def test_outbound_capture(pair: Pair, firewall: str, processes: ProcessGroup) -> None:
    start_backend(processes, pair.b, "http", APP_PORT)
    start_backend(processes, pair.b, "banner", BANNER_PORT)
    start_backend(processes, pair.b, "tcp-echo", IGNORED_PORT)
    tulle_init(pair.a, firewall, "--outbound-ports-to-ignore", str(IGNORED_PORT))
    start_sidecar(processes, pair.a)

    # The app calls b by IP:port: captured, forwarded, counted once (the
    # proxy's own upstream connection is not captured again: no loop).
    status, _ = run_in(pair.a, lambda: http_get(pair.b_ip, APP_PORT, "/"))
    assert status == 200
    m = metrics(pair.a)
    target = f"{pair.b_ip}:{APP_PORT}"
    assert m.total("request_total", direction="outbound", target_addr=target) == 1
    assert m.total("response_total", direction="outbound", status_code="200") == 1
    assert m.total("proxy_error_total") == 0
    # No discovery knows that address: forwarded as it is, and counted so.
    assert m.total("outbound_passthrough_total", protocol="http") == 1

    # A server-speaks-first protocol passes (opaque once detection times out).
    assert run_in(pair.a, lambda: read_banner(pair.b_ip, BANNER_PORT)) == BANNER
    banner_target = f"{pair.b_ip}:{BANNER_PORT}"
    m = metrics(pair.a)
    assert m.total("tcp_open_total", direction="outbound", target_addr=banner_target) >= 1
    assert m.total("outbound_passthrough_total", protocol="tcp") == 1

    # An ignored port is not captured: it works, and the proxy never sees it.
    assert run_in(pair.a, lambda: echo(pair.b_ip, IGNORED_PORT, b"x" * 5000)) == b"x" * 5000
    # By label, not by substring: a latency sum such as 0.9443... must not match.
    assert f':{IGNORED_PORT}"' not in metrics(pair.a).text

    # Loopback is not captured: the app reaching its own sidecar's admin is direct.
    assert run_in(pair.a, lambda: http_status(*ADMIN, "/ready")) == 200
    assert metrics(pair.a).total("request_total", direction="outbound") == 1


def test_inbound_capture_reaches_the_app(
    pair: Pair, firewall: str, processes: ProcessGroup
) -> None:
    start_backend(processes, pair.b, "http", APP_PORT)
    start_backend(processes, pair.b, "banner", BANNER_PORT)
    tulle_init(pair.a, firewall)
    tulle_init(pair.b, firewall)
    start_sidecar(processes, pair.a)
    start_sidecar(processes, pair.b)

    status, body = run_in(pair.a, lambda: http_get(pair.b_ip, APP_PORT, "/"))
    assert status == 200, body
    # Both sidecars saw the call: a's outbound and b's inbound, which sent it to the app.
    assert metrics(pair.a).total("request_total", direction="outbound") == 1
    inbound = metrics(pair.b)
    assert inbound.total("request_total", direction="inbound") == 1
    assert inbound.total("response_total", direction="inbound", status_code="200") == 1

    # The original port picks the app's port: b's app also speaks a banner
    # protocol on another port, which the inbound reaches as the caller asked.
    assert run_in(pair.a, lambda: read_banner(pair.b_ip, BANNER_PORT)) == BANNER
    inbound = metrics(pair.b)
    banner_app = f"127.0.0.1:{BANNER_PORT}"
    assert inbound.total("tcp_open_total", direction="inbound", target_addr=banner_app) >= 1

    # A caller from outside never reaches b's own outbound (an open proxy)
    # through the inbound: refused, counted, closed without an answer.
    def outbound_port_from_outside() -> bytes:
        with socket.create_connection((pair.b_ip, 4140), timeout=IO_TIMEOUT_S) as sock:
            # Not HTTP, so a's outbound forwards it as it is to b.
            sock.sendall(b"\x00\x01 not http\r\n")
            return sock.recv(1024)

    assert run_in(pair.a, outbound_port_from_outside) == b""
    assert (
        metrics(pair.b).total("proxy_error_total", direction="inbound", reason="loop-detected") == 1
    )


VIRTUAL_IP = "10.231.0.9"  # no interface has it: only discovery knows where it goes


def test_routing_by_original_destination(
    pair: Pair, firewall: str, processes: ProcessGroup
) -> None:
    start_backend(processes, pair.b, "http", APP_PORT)
    start_backend(processes, pair.b, "banner", BANNER_PORT)
    # Two more that discovery knows nothing of (neither as a service address
    # nor as an endpoint): they get passthrough.
    start_backend(processes, pair.b, "http", APP_PORT + 1)
    start_backend(processes, pair.b, "banner", BANNER_PORT + 1)
    tulle_init(pair.a, firewall)
    # Discovery knows two virtual addresses (as a ClusterIP:port is known).
    start_sidecar(
        processes,
        pair.a,
        "--static-dst", f"{VIRTUAL_IP}:{APP_PORT}={pair.b_ip}:{APP_PORT}",
        "--static-dst", f"{VIRTUAL_IP}:{BANNER_PORT}={pair.b_ip}:{BANNER_PORT}",
    )  # fmt: skip

    # HTTP to the virtual address: discovery's endpoints, no passthrough. The
    # address itself answers nothing, so a 200 means the proxy routed it.
    status, _ = run_in(pair.a, lambda: http_get(VIRTUAL_IP, APP_PORT, "/"))
    assert status == 200
    m = metrics(pair.a)
    assert (
        m.total(
            "request_total",
            direction="outbound",
            dst_service=f"{VIRTUAL_IP}:{APP_PORT}",
            target_addr=f"{pair.b_ip}:{APP_PORT}",
        )
        == 1
    )
    assert m.total("outbound_passthrough_total") == 0

    # Not HTTP (a banner) to a virtual address: balanced over its endpoints too.
    assert run_in(pair.a, lambda: read_banner(VIRTUAL_IP, BANNER_PORT)) == BANNER
    m = metrics(pair.a)
    assert m.total("tcp_open_total", peer="dst", target_addr=f"{pair.b_ip}:{BANNER_PORT}") >= 1
    assert m.total("outbound_passthrough_total") == 0

    # A Host that names no service, on a captured connection: it goes where the
    # app was connecting (a site outside the mesh), counted as passthrough.
    def unknown_host() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(pair.b_ip, APP_PORT + 1, timeout=IO_TIMEOUT_S)
        try:
            conn.request("GET", "/", headers={"Host": "outside.example"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    status, body = run_in(pair.a, unknown_host)
    assert status == 200, body
    m = metrics(pair.a)
    assert m.total("outbound_passthrough_total", protocol="http") == 1
    # A banner to an address nobody knows: forwarded as it is, counted.
    assert run_in(pair.a, lambda: read_banner(pair.b_ip, BANNER_PORT + 1)) == BANNER
    assert metrics(pair.a).total("outbound_passthrough_total", protocol="tcp") == 1
    # An endpoint of a service discovery knows is not passthrough (it would
    # get the endpoint's identity, were it meshed).
    assert run_in(pair.a, lambda: read_banner(pair.b_ip, BANNER_PORT)) == BANNER
    assert metrics(pair.a).total("outbound_passthrough_total", protocol="tcp") == 1


H2_BACKEND = Path(__file__).resolve().parents[1] / "http2" / "h2_backend.py"


def h2_status(host: str, port: int, authority: bytes) -> int:
    """One prior-knowledge HTTP/2 GET; the response's :status (0: none)."""
    import h2.config
    import h2.connection
    import h2.events

    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
               (b":path", b"/")]  # fmt: skip
    conn.send_headers(1, request, end_stream=True)
    with socket.create_connection((host, port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + IO_TIMEOUT_S
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            sock.sendall(conn.data_to_send())
    return 0


def test_captured_http2_whose_authority_names_no_service_goes_to_the_original_destination(
    pair: Pair, firewall: str, processes: ProcessGroup
) -> None:
    """As HTTP/1 does with a Host that names no service (a site outside the mesh)."""
    port = APP_PORT + 3
    backend = processes.start(
        "backend-h2",
        in_netns(pair.b, [sys.executable, str(H2_BACKEND), "--port", str(port),
                          "--host", "0.0.0.0"]),
    )  # fmt: skip
    backend.wait_for(lambda: "LISTENING" in backend.output(), "listening line")
    tulle_init(pair.a, firewall)
    start_sidecar(processes, pair.a)
    status = run_in(pair.a, lambda: h2_status(pair.b_ip, port, b"outside.example"))
    assert status == 200
    m = metrics(pair.a)
    target = f"{pair.b_ip}:{port}"
    assert m.total("request_total", direction="outbound", target_addr=target) == 1
    assert m.total("proxy_error_total", direction="outbound") == 0


A_IP6, B_IP6 = "fd00:231::1", "fd00:231::2"


def _add_ipv6(pair: Pair) -> None:
    for ns, ip in ((pair.a, A_IP6), (pair.b, B_IP6)):
        # nodad: usable at once (duplicate detection would delay it ~1 s).
        done = run(ns, ["ip", "addr", "add", f"{ip}/64", "dev", "veth0", "nodad"])
        assert done.returncode == 0, done.stderr


def test_ipv6_capture_reads_the_ipv6_original_destination(
    pair: Pair, firewall: str, processes: ProcessGroup
) -> None:
    _add_ipv6(pair)
    start_backend(processes, pair.b, "http", APP_PORT, host="[::]")
    start_backend(processes, pair.b, "banner", BANNER_PORT, host="[::]")
    printed = tulle_init(pair.a, firewall)
    assert "ip6tables" in printed and "::1/128" in printed
    # ip6tables REDIRECTs locally made connections to ::1.
    start_sidecar(processes, pair.a, "--outbound-addr", "[::1]:4140")

    status, _ = run_in(pair.a, lambda: http_get(B_IP6, APP_PORT, "/"))
    assert status == 200
    m = metrics(pair.a)
    assert m.total("request_total", direction="outbound", target_addr=f"{B_IP6}:{APP_PORT}") == 1
    assert run_in(pair.a, lambda: read_banner(B_IP6, BANNER_PORT)) == BANNER
    m = metrics(pair.a)
    assert m.total("tcp_open_total", peer="dst", target_addr=f"{B_IP6}:{BANNER_PORT}") >= 1
    assert m.total("outbound_passthrough_total", protocol="tcp") == 1


TRUST_DOMAIN = "tulle.test"
WEB_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/web"
BOOKS_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/books"


def test_captured_call_to_a_service_address_is_mtls(
    pair: Pair, firewall: str, processes: ProcessGroup, tmp_path: Path
) -> None:
    issuer = tmp_path / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", TRUST_DOMAIN],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    start_backend(processes, pair.b, "http", APP_PORT)
    tulle_init(pair.a, firewall)
    tulle_init(pair.b, firewall)
    # b's app as a meshed endpoint of the service at the virtual address: a's
    # proxy dials b's app port with mTLS; b's rules hand that to b's inbound.
    start_sidecar(
        processes,
        pair.a,
        "--static-dst", f"{VIRTUAL_IP}:{APP_PORT}={pair.b_ip}:{APP_PORT}@{BOOKS_ID}",
        "--identity", WEB_ID, "--identity-issuer-dir", str(issuer),
    )  # fmt: skip
    start_sidecar(processes, pair.b, "--identity", BOOKS_ID, "--identity-issuer-dir", str(issuer))

    status, body = run_in(pair.a, lambda: http_get(VIRTUAL_IP, APP_PORT, "/headers"))
    assert status == 200, body
    headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
    # The app in b learns its caller's verified identity: mTLS end to end,
    # though neither app knows there is a mesh.
    assert headers["tulle-client-id"] == WEB_ID
    out = metrics(pair.a)
    assert out.total("request_total", direction="outbound", tls="true", server_id=BOOKS_ID) == 1
    assert out.total("outbound_passthrough_total") == 0
    inbound = metrics(pair.b)
    assert inbound.total("request_total", direction="inbound", tls="true", client_id=WEB_ID) == 1


OPEN_PORT = 8081
POLICY_MANIFEST = """\
services:
  - name: web
    port: 8080
    endpoints: [10.231.0.2:8080]
policy:
  servers:
    - {name: web-closed, workload: web, port: 8080, protocol: http/1.1, defaultPolicy: deny}
    - name: web-open
      workload: web
      port: 8081
      protocol: http/1.1
      defaultPolicy: all-unauthenticated
"""


def test_inbound_policy_server_is_chosen_by_the_original_port(
    pair: Pair, firewall: str, processes: ProcessGroup, tmp_path: Path
) -> None:
    """b's app listens on two ports whose Servers differ: a caller of 8080 meets
    `web-closed` (deny), one of 8081 meets `web-open`, whichever port the
    proxy's --app-addr names (here the open one)."""
    start_backend(processes, pair.b, "http", APP_PORT)
    start_backend(processes, pair.b, "http", OPEN_PORT)
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY_MANIFEST)
    # The control plane runs inside b, on b's loopback (the proxy's uid is not captured).
    control = processes.start(
        "control-b",
        in_netns(pair.b, [sys.executable, "-m", "tulle", "control", "--manifest", str(manifest),
                          "--grpc-addr", "127.0.0.1:8086", "--admin-addr", "127.0.0.1:9990",
                          "--http-addr", "off"]),
    )  # fmt: skip
    control.wait_for(lambda: "tulle control ready" in control.output(), "the ready line")
    tulle_init(pair.b, firewall)
    start_sidecar(
        processes, pair.b,
        "--app-addr", f"127.0.0.1:{OPEN_PORT}",
        "--workload", "web", "--control-addr", "127.0.0.1:8086",
    )  # fmt: skip

    status, body = run_in(pair.a, lambda: http_get(pair.b_ip, APP_PORT, "/"))
    assert status == 403, body
    status, body = run_in(pair.a, lambda: http_get(pair.b_ip, OPEN_PORT, "/"))
    assert status == 200, body
    inbound = metrics(pair.b)
    assert inbound.total("inbound_http_authz_deny_total", server="web-closed") == 1
    assert inbound.total("inbound_http_authz_allow_total", server="web-open") == 1
    assert inbound.total("inbound_http_authz_allow_total", server="web-closed") == 0


H2_BACKEND = Path(__file__).resolve().parents[1] / "http2" / "h2_backend.py"


def test_captured_http2_inbound_goes_to_the_original_port(
    pair: Pair, firewall: str, processes: ProcessGroup
) -> None:
    """An HTTP/2 (h2c) app on two ports: each caller reaches the port it called,
    as HTTP/1 callers do, not `--app-addr`'s port."""
    for port in (APP_PORT, OPEN_PORT):
        backend = processes.start(
            f"h2-backend-{port}",
            in_netns(pair.b, [sys.executable, str(H2_BACKEND), "--port", str(port)]),
        )
        backend.wait_for(lambda b=backend: "LISTENING" in b.output(), "listening line")
    tulle_init(pair.b, firewall)
    start_sidecar(processes, pair.b)  # --app-addr 127.0.0.1:8080
    for port in (OPEN_PORT, APP_PORT):
        done = run(
            pair.a,
            ["curl", "--silent", "--show-error", "--max-time", "20", "--http2-prior-knowledge",
             f"http://{pair.b_ip}:{port}/"],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"hello from {port}\n", done.stdout
    inbound = metrics(pair.b)
    assert inbound.total("request_total", direction="inbound") == 2
