"""Tulle beside nginx and HAProxy over the same backend, in one run, with the ratios (issue 15).

    python bench/peers.py [--duration 8] [--rounds 2] [--only http1,http2,grpc,mtls]

Every target runs against one backend: nginx with one worker serving a
13-byte body ("hello, world!") with its usual response headers (Server, Date,
Content-Type, Content-Length, Connection), on one HTTP/1.1 port and one
prior-knowledge h2c port. Each proxy runs one worker (nginx
`worker_processes 1`, HAProxy `nbthread 1`, `tulle proxy --workers 1`):

* HTTP/1.1, `wrk -t1 -c50`, every request carrying 8 browser-like headers
  (User-Agent, Accept, Accept-Language, Accept-Encoding, Referer, Cookie,
  Cache-Control, Upgrade-Insecure-Requests): direct, nginx, HAProxy, Tulle.
* HTTP/2, `h2load -c10 -m10`, h2 on both sides (HAProxy `proto h2` on its
  server line; nginx cannot proxy to h2, so it has no row): direct, HAProxy,
  Tulle.
* Each proxy's CPU per request or stream (user + system from /proc, over
  the proxy's processes), which says more than req/s on a busy machine.
* gRPC unary (h2load sending gRPC-framed Echo/Unary) against the test gRPC
  server (grpcio): direct with c=2 m=50 and with c=1 m=100 (one connection,
  the shape the hops' single upstream connection gives the server), and
  through two Tulle hops (c=2 m=50) in plaintext and with mTLS between them;
  with the gRPC server's and h2load's CPU per call beside the proxies', and
  the whole machine's CPU per call (client + server + proxies): on a machine
  whose cores are all busy, that is what the throughput ratio follows.
* HTTP/1.1 c=50 through two Tulle hops: plaintext vs mTLS between the hops,
  with the proxies' CPU per request (their ratio is the target's measure
  that a busy machine moves least).
* Tulle's RSS: idle after start, and the peak sampled during the HTTP/1 run.

Rounds are interleaved (every target once, then again), and each cell prints
the range over the rounds, so a burst of other work on this shared machine
shows as a wide range rather than a wrong ratio. Output: markdown on stdout.

Needs: wrk, h2load (nghttp2-client), nginx, haproxy.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http1 as h1
import http2 as h2b
import mtls_hops

LOOPBACK = h1.LOOPBACK
H1_SERVICE = "bench"  # Tulle's --static-dst name for the backend's HTTP/1.1 port
H2_SERVICE = "bench-h2"  # ... and for its h2c port
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-GB,en;q=0.7,fr;q=0.3",
    "Accept-Encoding: gzip, deflate, br",
    "Referer: http://bench/index.html",
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
    "Cache-Control: max-age=0",
    "Upgrade-Insecure-Requests: 1",
)

BACKEND_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    server {{
        listen {host}:{h1_port};
        listen {host}:{h2_port} http2;
        location / {{ return 200 "hello, world!"; }}
    }}
}}
"""

PROXY_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    upstream backend {{ server {host}:{backend}; keepalive 64; keepalive_requests 100000000; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend h1
    bind {host}:{h1_port}
    default_backend backend_h1
frontend h2
    bind {host}:{h2_port} proto h2
    default_backend backend_h2
backend backend_h1
    server b1 {host}:{backend_h1}
backend backend_h2
    server b2 {host}:{backend_h2} proto h2
"""


class Run:
    """The results of one target over the rounds."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.cpu_us: list[float] = []  # the proxies', per request
        self.backend_us: list[float] = []  # the backend's (gRPC server), per request
        self.client_us: list[float] = []  # the load generator's, per request
        self.failed = 0

    def add(
        self,
        rate: float,
        failed: int,
        cpu_us: float | None = None,
        backend_us: float | None = None,
        client_us: float | None = None,
    ) -> None:
        self.rates.append(rate)
        self.failed += failed
        if cpu_us is not None:
            self.cpu_us.append(cpu_us)
        if backend_us is not None:
            self.backend_us.append(backend_us)
        if client_us is not None:
            self.client_us.append(client_us)

    def machine_us(self) -> list[float]:
        """CPU per request of everything on the path, per round (client + backend + proxies)."""
        if not self.client_us or len(self.backend_us) != len(self.client_us):
            return []
        proxies = self.cpu_us or [0.0] * len(self.client_us)
        parts = zip(self.client_us, self.backend_us, proxies, strict=False)
        return [client + backend + proxy for client, backend, proxy in parts]


@dataclass
class Results:
    runs: dict[str, Run] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)

    def run(self, name: str) -> Run:
        return self.runs.setdefault(name, Run())


def _spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    if len(values) == 1 or fmt.format(low) == fmt.format(high):
        return fmt.format(low)
    return f"{fmt.format(low)}-{fmt.format(high)}"


def _ratio(results: Results, numerator: str, denominator: str) -> str:
    """The range of the per-round ratios of req/s (same round's pair)."""
    top, bottom = results.runs.get(numerator), results.runs.get(denominator)
    if top is None or bottom is None or not top.rates or not bottom.rates:
        return "-"
    pairs = [t / b for t, b in zip(top.rates, bottom.rates, strict=False) if b]
    return _spread(pairs, "{:.2f}") + "x"


def _cost_ratio(
    results: Results, cheaper: str, dearer: str, of: Callable[[Run], list[float]]
) -> str:
    """The range of the per-round ratios of CPU per request, `cheaper` / `dearer`:
    the throughput ratio where that CPU is what limits it."""
    top, bottom = results.runs.get(cheaper), results.runs.get(dearer)
    if top is None or bottom is None:
        return "-"
    pairs = [t / b for t, b in zip(of(top), of(bottom), strict=False) if b]
    return _spread(pairs, "{:.2f}") + "x" if pairs else "-"


def start_backend(processes: h1.Processes, work: Path) -> tuple[int, int]:
    directory = work / "backend"
    directory.mkdir()
    h1_port, h2_port = h1.free_port(), h1.free_port()
    config = directory / "nginx.conf"
    config.write_text(
        BACKEND_CONF.format(dir=directory, host=LOOPBACK, h1_port=h1_port, h2_port=h2_port)
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = processes.start(
        "backend", [binary, "-p", str(directory), "-c", str(config), "-e", str(directory / "e")]
    )
    h1.wait_until(process, "backend nginx", lambda: h1.http_ok(h1_port, "/"))
    h2b.wait_port(h2_port)
    return h1_port, h2_port


def start_nginx_proxy(processes: h1.Processes, work: Path, backend: int) -> tuple[int, int]:
    """nginx as the HTTP/1.1 reverse proxy; (port, master pid: its worker is a child)."""
    directory = work / "nginx-proxy"
    directory.mkdir()
    port = h1.free_port()
    config = directory / "nginx.conf"
    config.write_text(
        PROXY_NGINX_CONF.format(dir=directory, host=LOOPBACK, backend=backend, port=port)
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = processes.start(
        "nginx-proxy", [binary, "-p", str(directory), "-c", str(config), "-e", str(directory / "e")]
    )
    h1.wait_until(process, "nginx proxy", lambda: h1.http_ok(port, "/"))
    return port, process.pid


def start_haproxy(
    processes: h1.Processes, work: Path, backend_h1: int, backend_h2: int
) -> tuple[int, int, int]:
    """HAProxy with an HTTP/1.1 and an h2 frontend; (h1 port, h2 port, pid)."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    h1_port, h2_port = h1.free_port(), h1.free_port()
    config = work / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONF.format(
            host=LOOPBACK,
            h1_port=h1_port,
            h2_port=h2_port,
            backend_h1=backend_h1,
            backend_h2=backend_h2,
        )
    )
    process = processes.start("haproxy", [binary, "-db", "-f", str(config)])
    h1.wait_until(process, "haproxy", lambda: h1.http_ok(h1_port, "/"))
    return h1_port, h2_port, process.pid


def start_tulle(processes: h1.Processes, name: str, dsts: Sequence[str]) -> h1.ProxyPorts:
    inbound, outbound, admin = h1.free_port(), h1.free_port(), h1.free_port()
    argv = [sys.executable, "-m", "tulle", "proxy", "--workers", "1", "--log-level", "warning"]
    argv += ["--inbound-addr", f"{LOOPBACK}:{inbound}", "--outbound-addr", f"{LOOPBACK}:{outbound}"]
    argv += ["--admin-addr", f"{LOOPBACK}:{admin}"]
    for dst in dsts:
        argv += ["--static-dst", dst]
    process = processes.start(name, argv)
    h1.wait_until(process, name, lambda: h1.http_ok(admin, "/ready"))
    return h1.ProxyPorts(process, inbound, outbound, admin)


def children_cpu_s() -> float:
    """User + system CPU of this script's finished children (wrk, h2load) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    port: int, host: str | None, connections: int, duration: float, browser: bool
) -> h1.WrkResult:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if host:
        argv += ["-H", f"Host: {host}"]
    if browser:
        for header in BROWSER_HEADERS:
            argv += ["-H", header]
    argv.append(f"http://{LOOPBACK}:{port}/")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise h1.BenchError(f"wrk failed: {done.stderr}")
    return h1.parse_wrk(done.stdout)


@dataclass
class H2Load:
    """One h2load run: req/s, succeeded, failed, and CPU seconds of each party."""

    rate: float
    ok: int
    failed: int
    proxy_cpu: float
    backend_cpu: float
    client_cpu: float

    def per_ok_us(self, seconds: float) -> float | None:
        return seconds / self.ok * 1e6 if self.ok else None


def h2load(
    port: int,
    authority: str,
    duration: float,
    clients: int,
    streams: int,
    proxies: Sequence[int] = (),
    grpc_body: Path | None = None,
    backends: Sequence[int] = (),
) -> H2Load:
    """One h2load run, with the CPU the proxies, the backends and h2load spent."""
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(int(duration))]
    argv += ["-H", f":authority: {authority}"]
    url = f"http://{LOOPBACK}:{port}/"
    if grpc_body is not None:
        argv += ["-d", str(grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        url = f"http://{LOOPBACK}:{port}/tulle.test.echo.Echo/Unary"
    before = sum(h2b.cpu_seconds(pid) for pid in proxies)
    backend_before = sum(h2b.cpu_seconds(pid) for pid in backends)
    client_before = children_cpu_s()
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    client = children_cpu_s() - client_before
    cpu = sum(h2b.cpu_seconds(pid) for pid in proxies) - before
    backend = sum(h2b.cpu_seconds(pid) for pid in backends) - backend_before
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    counts = re.search(r"requests: .* (\d+) succeeded, (\d+) failed", done.stdout)
    status = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if not (rate and counts and status):
        raise h1.BenchError(f"cannot read h2load's output:\n{done.stdout}\n{done.stderr}")
    ok = int(status.group(1))
    failed = int(counts.group(2)) + max(0, int(counts.group(1)) - ok)
    return H2Load(float(rate.group(1)), ok, failed, cpu, backend, client)


class RssSampler:
    """The peak RSS of a process tree while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_kib = max(self.peak_kib, h1.tree_rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per target")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="http1,http2,grpc,mtls", help="comma-separated parts")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    for tool in ("wrk", "h2load", "nginx", "haproxy"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed (apt-get install -y wrk nghttp2-client nginx haproxy)")
            return 2
    results = Results()
    with tempfile.TemporaryDirectory(prefix="tulle-bench-peers-") as tmp:
        work = Path(tmp)
        processes = h1.Processes(work)
        try:
            _run(processes, work, args.duration, args.rounds, parts, results)
        finally:
            processes.close()
    _render(results, args, parts)
    return 0


def _run(
    processes: h1.Processes,
    work: Path,
    duration: float,
    rounds: int,
    parts: set[str],
    results: Results,
) -> None:
    backend_h1, backend_h2 = start_backend(processes, work)
    nginx_port, nginx_pid = start_nginx_proxy(processes, work, backend_h1)
    haproxy_h1, haproxy_h2, haproxy_pid = start_haproxy(processes, work, backend_h1, backend_h2)
    tulle = start_tulle(
        processes,
        "tulle",
        [f"{H1_SERVICE}={LOOPBACK}:{backend_h1}", f"{H2_SERVICE}={LOOPBACK}:{backend_h2}"],
    )
    time.sleep(1.0)
    results.rss["idle"] = h1.tree_rss_kib(tulle.process.pid) / 1024
    tulle_pids = [tulle.process.pid]

    steps: list[tuple[str, Callable[[], None]]] = []

    def h1_step(
        name: str,
        port: int,
        host: str | None,
        proxies: Sequence[int] = (),
        sampler_pid: int | None = None,
    ) -> None:
        def step() -> None:
            before = sum(h2b.cpu_seconds(pid) for pid in proxies)
            if sampler_pid is not None:
                with RssSampler(sampler_pid) as sampler:
                    result = wrk(port, host, 50, duration, browser=True)
                results.rss["loaded"] = max(results.rss.get("loaded", 0), sampler.peak_kib / 1024)
                results.rss["loaded_rate"] = max(
                    results.rss.get("loaded_rate", 0), result.requests_per_s
                )
            else:
                result = wrk(port, host, 50, duration, browser=True)
            cpu = sum(h2b.cpu_seconds(pid) for pid in proxies) - before
            per_request = cpu / result.requests * 1e6 if proxies and result.requests else None
            results.run(name).add(result.requests_per_s, result.errors, per_request)

        steps.append((name, step))

    def h2_step(name: str, port: int, authority: str, proxies: Sequence[int] = ()) -> None:
        def step() -> None:
            run = h2load(port, authority, duration, 10, 10, proxies)
            cpu = run.per_ok_us(run.proxy_cpu) if proxies else None
            results.run(name).add(run.rate, run.failed, cpu)

        steps.append((name, step))

    if "http1" in parts:
        h1_step("h1-direct", backend_h1, None)
        h1_step("h1-nginx", nginx_port, None, [nginx_pid])
        h1_step("h1-haproxy", haproxy_h1, None, [haproxy_pid])
        h1_step("h1-tulle", tulle.outbound, H1_SERVICE, tulle_pids, sampler_pid=tulle.process.pid)
    if "http2" in parts:
        h2_step("h2-direct", backend_h2, H2_SERVICE)
        h2_step("h2-haproxy", haproxy_h2, H2_SERVICE, [haproxy_pid])
        h2_step("h2-tulle", tulle.outbound, H2_SERVICE, tulle_pids)
    if "grpc" in parts or "mtls" in parts:
        _mesh_steps(processes, work, duration, parts, results, backend_h1, steps)

    # Warm every path once (connections pooled, caches filled), then the rounds.
    for name, step in steps:
        print(f"warm-up {name}", file=sys.stderr)
        _warm(step, results, name)
    for round_number in range(rounds):
        for name, step in steps:
            print(f"round {round_number + 1}: {name}", file=sys.stderr)
            step()
    results.rss["after"] = h1.tree_rss_kib(tulle.process.pid) / 1024


def _warm(step: Callable[[], None], results: Results, name: str) -> None:
    step()
    results.runs.pop(name, None)


def _mesh_steps(
    processes: h1.Processes,
    work: Path,
    duration: float,
    parts: set[str],
    results: Results,
    backend_h1: int,
    steps: list[tuple[str, Callable[[], None]]],
) -> None:
    issuer = work / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", "bench.local"],
        check=True, capture_output=True,
    )  # fmt: skip
    if "grpc" in parts:
        grpc_procs = h2b.Processes(work)
        processes.children.append(_Closer(grpc_procs))  # type: ignore[arg-type]
        grpc_port = h2b.start_grpc_server(grpc_procs)
        grpc_pids = [child.pid for child in grpc_procs.children]
        body = h2b.grpc_request_file(work)
        a = mtls_hops.start_proxy(
            processes, "grpc-a", app_port=grpc_port, dst=None,
            identity=mtls_hops.BOOKS, issuer=issuer,
        )  # fmt: skip
        b = mtls_hops.start_proxy(
            processes, "grpc-b", app_port=None,
            dst=f"{LOOPBACK}:{a.inbound}@{mtls_hops.BOOKS}",
            identity=mtls_hops.WEB, issuer=issuer,
        )  # fmt: skip
        pids = [a.process.pid, b.process.pid]
        # The same two hops in plaintext: what of the gRPC cost is TLS.
        plain_a = mtls_hops.start_proxy(
            processes, "grpc-plain-a", app_port=grpc_port, dst=None, identity=None, issuer=None
        )
        plain_b = mtls_hops.start_proxy(
            processes, "grpc-plain-b", app_port=None, dst=f"{LOOPBACK}:{plain_a.inbound}",
            identity=None, issuer=None,
        )  # fmt: skip
        plain_pids = [plain_a.process.pid, plain_b.process.pid]

        def grpc_step(
            name: str, port: int, proxies: Sequence[int], clients: int = 2
        ) -> Callable[[], None]:
            def step() -> None:
                run = h2load(
                    port, h1.SERVICE, duration, clients, 100 // clients, proxies,
                    grpc_body=body, backends=grpc_pids,
                )  # fmt: skip
                results.run(name).add(
                    run.rate,
                    run.failed,
                    run.per_ok_us(run.proxy_cpu) if proxies else None,
                    run.per_ok_us(run.backend_cpu),
                    run.per_ok_us(run.client_cpu),
                )

            return step

        steps.append(("grpc-direct", grpc_step("grpc-direct", grpc_port, ())))
        steps.append(("grpc-direct-1", grpc_step("grpc-direct-1", grpc_port, (), clients=1)))
        steps.append(("grpc-plain-2", grpc_step("grpc-plain-2", plain_b.outbound, plain_pids)))
        steps.append(("grpc-mtls-2", grpc_step("grpc-mtls-2", b.outbound, pids)))
    if "mtls" in parts:
        plain_a = mtls_hops.start_proxy(
            processes, "plain-a", app_port=backend_h1, dst=None, identity=None, issuer=None
        )
        plain_b = mtls_hops.start_proxy(
            processes, "plain-b", app_port=None, dst=f"{LOOPBACK}:{plain_a.inbound}",
            identity=None, issuer=None,
        )  # fmt: skip
        mtls_a = mtls_hops.start_proxy(
            processes, "mtls-a", app_port=backend_h1, dst=None,
            identity=mtls_hops.BOOKS, issuer=issuer,
        )  # fmt: skip
        mtls_b = mtls_hops.start_proxy(
            processes, "mtls-b", app_port=None,
            dst=f"{LOOPBACK}:{mtls_a.inbound}@{mtls_hops.BOOKS}",
            identity=mtls_hops.WEB, issuer=issuer,
        )  # fmt: skip

        def hops_step(name: str, port: int, proxies: Sequence[int]) -> Callable[[], None]:
            def step() -> None:
                before = sum(h2b.cpu_seconds(pid) for pid in proxies)
                result = wrk(port, h1.SERVICE, 50, duration, browser=False)
                cpu = sum(h2b.cpu_seconds(pid) for pid in proxies) - before
                per_request = cpu / result.requests * 1e6 if result.requests else None
                results.run(name).add(result.requests_per_s, result.errors, per_request)

            return step

        plain_pids = [plain_a.process.pid, plain_b.process.pid]
        mtls_pids = [mtls_a.process.pid, mtls_b.process.pid]
        steps.append(("plain-2", hops_step("plain-2", plain_b.outbound, plain_pids)))
        steps.append(("mtls-2", hops_step("mtls-2", mtls_b.outbound, mtls_pids)))


class _Closer:
    """Lets h1.Processes.close() stop the children of an h2b.Processes too."""

    def __init__(self, inner: h2b.Processes) -> None:
        self.inner = inner

    def poll(self) -> int:
        self.inner.close()
        return 0


ROWS = (
    ("h1-direct", "HTTP/1.1 wrk c=50, 8 browser headers: direct to nginx backend"),
    ("h1-nginx", "... through nginx (1 worker, upstream keep-alive)"),
    ("h1-haproxy", "... through HAProxy (nbthread 1)"),
    ("h1-tulle", "... through Tulle (1 worker)"),
    ("h2-direct", "HTTP/2 h2load c=10 m=10: direct to nginx h2c"),
    ("h2-haproxy", "... through HAProxy, proto h2 both sides"),
    ("h2-tulle", "... through Tulle, h2 both sides"),
    ("grpc-direct", "gRPC unary h2load c=2 m=50: direct"),
    ("grpc-direct-1", "... direct, c=1 m=100 (one connection, as behind the hops)"),
    ("grpc-plain-2", "... c=2 m=50 through two Tulle hops, plaintext between them"),
    ("grpc-mtls-2", "... c=2 m=50 through two Tulle hops, mTLS between them"),
    ("plain-2", "HTTP/1.1 wrk c=50: two Tulle hops, plaintext"),
    ("mtls-2", "... two Tulle hops, mTLS between them"),
)


def _render(results: Results, args: argparse.Namespace, parts: set[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"\n`python bench/peers.py --duration {args.duration:g} --rounds {args.rounds}`, {stamp}\n"
    )
    print(
        "| target | req/s (range over rounds) | failed | proxy CPU us per request/stream"
        " | backend CPU us | client CPU us |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, label in ROWS:
        run = results.runs.get(name)
        if run is None:
            continue
        print(
            f"| {label} | {_spread(run.rates)} | {run.failed} | {_spread(run.cpu_us)}"
            f" | {_spread(run.backend_us)} | {_spread(run.client_us)} |"
        )
    print("\n| ratio | per round |")
    print("|---|---:|")
    for label, top, bottom in (
        ("HTTP/1.1 Tulle / nginx", "h1-tulle", "h1-nginx"),
        ("HTTP/1.1 Tulle / HAProxy", "h1-tulle", "h1-haproxy"),
        ("HTTP/1.1 Tulle / direct", "h1-tulle", "h1-direct"),
        ("HTTP/2 Tulle / HAProxy", "h2-tulle", "h2-haproxy"),
        ("HTTP/2 HAProxy / direct", "h2-haproxy", "h2-direct"),
        ("HTTP/2 Tulle / direct", "h2-tulle", "h2-direct"),
        ("gRPC two mTLS hops / direct", "grpc-mtls-2", "grpc-direct"),
        ("gRPC two mTLS hops / direct on one connection", "grpc-mtls-2", "grpc-direct-1"),
        ("gRPC direct, one connection / two", "grpc-direct-1", "grpc-direct"),
        ("gRPC two plaintext hops / direct", "grpc-plain-2", "grpc-direct"),
        ("gRPC two hops mTLS / plaintext", "grpc-mtls-2", "grpc-plain-2"),
        ("two hops mTLS / plaintext", "mtls-2", "plain-2"),
    ):
        value = _ratio(results, top, bottom)
        if value != "-":
            print(f"| {label} | {value} |")
    for label, cheaper, dearer, of in (
        (
            "gRPC machine CPU per call, direct / two mTLS hops",
            "grpc-direct", "grpc-mtls-2", Run.machine_us,
        ),
        (
            "two hops proxy CPU per request, plaintext / mTLS",
            "plain-2", "mtls-2", lambda run: run.cpu_us,
        ),
    ):  # fmt: skip
        value = _cost_ratio(results, cheaper, dearer, of)
        if value != "-":
            print(f"| {label} (CPU) | {value} |")
    rss = results.rss
    line = f"\nTulle RSS: idle {rss.get('idle', 0):.1f} MiB"
    if "loaded" in rss:
        line += (
            f", peak {rss['loaded']:.1f} MiB under HTTP/1 c=50 ({rss['loaded_rate']:,.0f} req/s)"
        )
    line += f", after the runs {rss.get('after', 0):.1f} MiB"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
