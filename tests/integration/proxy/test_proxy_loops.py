"""Requests addressed to the proxy itself, loops through several proxies, and
destinations the outbound refuses: each is answered at once with a clear
status and `tulle-proxy-error`, over HTTP/1 (Host, absolute-form, CONNECT) and
HTTP/2 (:authority), and the proxy's descriptors stay few."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.mesh import Backend, Proxy, proxy_args, start_proxy, wait_ready
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup
from support.rawhttp import RawResponse, exchange, request_bytes
from support.tools import curl

pytestmark = pytest.mark.integration

# A request that loops opens descriptors without end; a refused one opens none.
FD_CEILING = 64


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def h2_request(proxy: Proxy, authority: str) -> tuple[int, dict[str, str]]:
    """One HTTP/2 (prior knowledge) request with `authority`; status and headers."""
    result = curl(
        "--http2-prior-knowledge",
        "--dump-header",
        "-",
        "--output",
        "/dev/null",
        "-H",
        f"Host: {authority}",
        f"{proxy.outbound_url}/",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def connect(proxy: Proxy, authority: str) -> RawResponse:
    return exchange(*proxy.outbound, request_bytes("CONNECT", authority, authority))


@pytest.fixture(scope="module")
def wildcard_proxy(module_processes: ProcessGroup, http_backend: Backend) -> Iterator[Proxy]:
    """A proxy with defaults but ports: inbound on 0.0.0.0, as `tulle proxy` binds it."""
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(inbound, outbound, admin, http_backend.addr, {"books": [http_backend.addr]})
    args[args.index("--inbound-addr") + 1] = f"0.0.0.0:{inbound}"
    process = module_processes.tulle("proxy-wildcard", args)
    yield wait_ready(Proxy(process, inbound, outbound, admin))


def own_addresses(proxy: Proxy) -> list[str]:
    """Addresses that reach the proxy's own listeners, as a caller could write them."""
    return [
        f"{LOOPBACK}:{proxy.outbound_port}",
        f"{LOOPBACK}:{proxy.admin_port}",
        f"{LOOPBACK}:{proxy.inbound_port}",
        # The inbound is bound to 0.0.0.0: every local address reaches it.
        f"127.0.0.2:{proxy.inbound_port}",
        # 0.0.0.0 as a destination is the local host.
        f"0.0.0.0:{proxy.outbound_port}",
        # An IPv4-mapped IPv6 address is the same IPv4 address.
        f"[::ffff:127.0.0.1]:{proxy.admin_port}",
    ]


def assert_loop_refused(response: RawResponse) -> None:
    assert response.status == 508, response.raw_head
    assert response.proxy_error == "loop-detected", response.raw_head


def test_own_listeners_are_refused_by_host(wildcard_proxy: Proxy) -> None:
    before = wildcard_proxy.metrics().total("proxy_error_total", reason="loop-detected")
    addresses = own_addresses(wildcard_proxy)
    for address in addresses:
        response = exchange(*wildcard_proxy.outbound, request_bytes("GET", "/", address))
        assert_loop_refused(response)
    after = wildcard_proxy.metrics().total("proxy_error_total", reason="loop-detected")
    assert after - before == len(addresses)
    assert open_fds(wildcard_proxy.pid) < FD_CEILING


def test_own_listeners_are_refused_in_absolute_form(wildcard_proxy: Proxy) -> None:
    for address in own_addresses(wildcard_proxy):
        result = curl(
            "--proxy",
            wildcard_proxy.outbound_url,
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %header{tulle-proxy-error}",
            f"http://{address}/",
        )
        assert result.stdout == "508 loop-detected", (address, result.stdout, result.stderr)
    assert open_fds(wildcard_proxy.pid) < FD_CEILING


def test_own_listeners_are_refused_for_connect(wildcard_proxy: Proxy) -> None:
    for address in own_addresses(wildcard_proxy):
        assert_loop_refused(connect(wildcard_proxy, address))
    assert open_fds(wildcard_proxy.pid) < FD_CEILING


def test_own_listeners_are_refused_over_http2(wildcard_proxy: Proxy) -> None:
    before = wildcard_proxy.metrics().total("proxy_error_total", reason="loop-detected")
    addresses = own_addresses(wildcard_proxy)
    for address in addresses:
        status, headers = h2_request(wildcard_proxy, address)
        assert (status, headers.get("tulle-proxy-error")) == (508, "loop-detected"), address
    after = wildcard_proxy.metrics().total("proxy_error_total", reason="loop-detected")
    assert after - before == len(addresses)
    assert open_fds(wildcard_proxy.pid) < FD_CEILING


def test_proxy_still_serves_after_refusing_loops(wildcard_proxy: Proxy) -> None:
    for address in own_addresses(wildcard_proxy):
        exchange(*wildcard_proxy.outbound, request_bytes("GET", "/", address))
    response = exchange(*wildcard_proxy.outbound, request_bytes("GET", "/", "books"))
    assert response.status == 200
    assert exchange(*wildcard_proxy.admin, request_bytes("GET", "/live", "admin")).status == 200


def test_endpoint_that_is_the_proxy_itself_is_refused(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    """A service whose endpoint is this proxy's own outbound (a bad --static-dst)."""
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(
        inbound,
        outbound,
        admin,
        http_backend.addr,
        {"self": [f"{LOOPBACK}:{outbound}"], "mine": [f"{LOOPBACK}:{inbound}"]},
    )
    proxy = wait_ready(Proxy(processes.tulle("proxy-self", args), inbound, outbound, admin))
    assert_loop_refused(exchange(*proxy.outbound, request_bytes("GET", "/", "self")))
    status, headers = h2_request(proxy, "self")
    assert (status, headers.get("tulle-proxy-error")) == (508, "loop-detected")
    # Its own inbound is no loop: that is how a sidecar reaches its own app by name.
    response = exchange(*proxy.outbound, request_bytes("GET", "/status/200", "mine"))
    assert response.status == 200, response.raw_head
    assert open_fds(proxy.pid) < FD_CEILING


def test_app_addr_that_is_the_proxy_itself_is_refused_at_start() -> None:
    inbound, outbound, admin = free_ports(3)
    args = proxy_args(inbound, outbound, admin, f"{LOOPBACK}:{inbound}")
    result = subprocess.run(
        [sys.executable, "-m", "tulle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "own inbound listener" in result.stderr


@pytest.fixture(scope="module")
def proxy_loop(module_processes: ProcessGroup) -> tuple[Proxy, Proxy]:
    """Two proxies each sending `loop` to the other's outbound: a loop of proxies."""
    a_in, a_out, a_admin, b_in, b_out, b_admin = free_ports(6)
    a = module_processes.tulle(
        "proxy-loop-a", proxy_args(a_in, a_out, a_admin, None, {"loop": [f"{LOOPBACK}:{b_out}"]})
    )
    b = module_processes.tulle(
        "proxy-loop-b", proxy_args(b_in, b_out, b_admin, None, {"loop": [f"{LOOPBACK}:{a_out}"]})
    )
    return wait_ready(Proxy(a, a_in, a_out, a_admin)), wait_ready(Proxy(b, b_in, b_out, b_admin))


def test_loop_of_proxies_is_cut_by_the_hop_count_http1(proxy_loop: tuple[Proxy, Proxy]) -> None:
    a, b = proxy_loop
    response = exchange(*a.outbound, request_bytes("GET", "/", "loop"))
    assert_loop_refused(response)
    assert "16 proxy hops" in response.body.decode()
    # A sees the even counts (0, 2, ... 16): A refused, and B relayed the answer.
    assert a.metrics().total("proxy_error_total", reason="loop-detected") >= 1
    for proxy in (a, b):
        assert open_fds(proxy.pid) < FD_CEILING


def test_loop_of_proxies_is_cut_by_the_hop_count_http2(proxy_loop: tuple[Proxy, Proxy]) -> None:
    a, b = proxy_loop
    status, headers = h2_request(a, "loop")
    assert (status, headers.get("tulle-proxy-error")) == (508, "loop-detected")
    for proxy in (a, b):
        assert open_fds(proxy.pid) < FD_CEILING


def hops_seen(response: RawResponse) -> list[str]:
    """The `tulle-hops` values the backend received (its /headers echo)."""
    document = json.loads(response.body)
    return [value for name, value in document["headers"] if name.lower() == "tulle-hops"]


def test_hop_count_is_added_and_bad_counts_are_refused(one_hop: Proxy) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", "/headers", "books"))
    assert response.status == 200
    assert hops_seen(response) == ["1"]
    response = exchange(
        *one_hop.outbound, request_bytes("GET", "/headers", "books", [("tulle-hops", "3")])
    )
    assert hops_seen(response) == ["4"]
    response = exchange(
        *one_hop.outbound, request_bytes("GET", "/", "books", [("tulle-hops", "16")])
    )
    assert_loop_refused(response)
    response = exchange(
        *one_hop.outbound, request_bytes("GET", "/", "books", [("tulle-hops", "x")])
    )
    assert response.status == 400


@pytest.fixture(scope="module")
def names_only(module_processes: ProcessGroup, http_backend: Backend) -> Proxy:
    """An outbound in the ingress mode: services by name, never a raw address."""
    protected = start_proxy(module_processes, app_addr=http_backend.addr, name="proxy-protected")
    return start_proxy(
        module_processes,
        static_dst={"books": [http_backend.addr]},
        extra=[
            "--outbound-raw-addresses",
            "refuse",
            "--deny-dst",
            f"{LOOPBACK}:{protected.admin_port}",
        ],
        name="proxy-names-only",
    )


def test_refuse_mode_refuses_raw_addresses_everywhere(
    names_only: Proxy, http_backend: Backend
) -> None:
    raw = http_backend.addr
    by_host = exchange(*names_only.outbound, request_bytes("GET", "/", raw))
    absolute = exchange(*names_only.outbound, request_bytes("GET", f"http://{raw}/", raw))
    tunnel = connect(names_only, raw)
    for response in (by_host, absolute, tunnel):
        assert response.status == 403, response.raw_head
        assert response.proxy_error == "destination-forbidden"
    status, headers = h2_request(names_only, raw)
    assert (status, headers.get("tulle-proxy-error")) == (403, "destination-forbidden")
    # By name it works.
    assert exchange(*names_only.outbound, request_bytes("GET", "/", "books")).status == 200
    # Its own listeners are still a loop.
    own = f"{LOOPBACK}:{names_only.admin_port}"
    assert_loop_refused(exchange(*names_only.outbound, request_bytes("GET", "/", own)))


def test_denied_address_is_refused_in_forward_mode(
    processes: ProcessGroup, http_backend: Backend, one_hop: Proxy
) -> None:
    proxy = start_proxy(
        processes,
        extra=["--deny-dst", f"{LOOPBACK}:{one_hop.admin_port}"],
        name="proxy-deny",
    )
    denied = f"{LOOPBACK}:{one_hop.admin_port}"
    response = exchange(*proxy.outbound, request_bytes("POST", "/shutdown", denied))
    assert response.status == 403, response.raw_head
    assert response.proxy_error == "destination-forbidden"
    assert connect(proxy, denied).status == 403
    # Any other raw address is forwarded as it is (the outbound is not a firewall).
    response = exchange(*proxy.outbound, request_bytes("GET", "/status/202", http_backend.addr))
    assert response.status == 202
    assert one_hop.process.alive()


def test_original_destination_that_is_the_proxy_itself_is_refused() -> None:
    """Transparent capture: an iptables REDIRECT hands the outbound a connection
    whose original destination is the proxy's own inbound (in a network
    namespace of the test's own, so the rule touches nothing else)."""
    for tool in ("unshare", "iptables", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    probe = Path(__file__).with_name("origdst_probe.py")
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(probe)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"no network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Opaque: closed at once (a reset, as its bytes were never read), not
    # forwarded round and round.
    assert seen["opaque"] in ("closed", "reset"), seen["opaque"]
    assert seen["http"].startswith("HTTP/1.1 508"), seen["http"]
    assert "tulle-proxy-error: loop-detected" in seen["http"]
    assert seen["fds"] < FD_CEILING
    assert seen["live"] == 200
    counted = [
        line
        for line in seen["metrics"].splitlines()
        if line.startswith("proxy_error_total") and 'reason="loop-detected"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 2, counted
