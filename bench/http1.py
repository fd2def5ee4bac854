"""HTTP/1.1 benchmark: Tulle against a direct call and against nginx, in one run.

Targets, all on 127.0.0.1, all fronting the same demo backend
(`tulle demo backend`, 13-byte keep-alive responses):

* direct   -- wrk -> backend
* tulle-1  -- wrk -> proxy A outbound (`--static-dst bench=backend`) -> backend
* tulle-2  -- wrk -> proxy B outbound (`bench` = A inbound) -> A inbound -> backend
* nginx    -- wrk -> nginx (1 worker, upstream keep-alive) -> backend

Each target runs with wrk at c=1 and c=50 (`--latency`); the script prints
req/s, p50 and p99, the ratios the project tracks (Tulle/direct, Tulle/nginx,
added p50 per hop at c=1), the proxy's idle RSS and, with `--strace`, syscalls
per request of the proxy and of the nginx worker. The output is a markdown
block meant for docs/benchmarks.md.

Usage: python bench/http1.py [--duration 10] [--quick] [--strace]
Needs: wrk, nginx (and strace for --strace), e.g. apt-get install -y wrk nginx strace.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
SERVICE = "bench"
READY_TIMEOUT_S = 15.0
CONCURRENCIES = (1, 50)
STRACE_SECONDS = 3.0


class BenchError(Exception):
    """A missing tool or a component that would not start."""


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Target:
    name: str
    description: str
    port: int
    host_header: str | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def http_ok(port: int, path: str, host: str | None = None) -> bool:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=1)
    try:
        headers = {"Host": host} if host else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_until(process: subprocess.Popen[bytes], what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise BenchError(f"{what} not ready within {READY_TIMEOUT_S} s")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children_file in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                children = [int(child) for child in children_file.read_text().split()]
                found.extend(children)
                pending.extend(children)
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(rss_kib(member) for member in [pid, *descendants(pid)])


class Processes:
    """Every child this benchmark starts; `close()` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.children.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_backend(processes: Processes) -> int:
    port = free_port()
    process = processes.start(
        "backend",
        [sys.executable, "-m", "tulle", "demo", "backend", "--addr", f"{LOOPBACK}:{port}"],
    )
    wait_until(process, "backend", lambda: http_ok(port, "/"))
    return port


@dataclass
class ProxyPorts:
    process: subprocess.Popen[bytes]
    inbound: int
    outbound: int
    admin: int


def start_proxy(
    processes: Processes, name: str, app_port: int | None, dst_port: int | None
) -> ProxyPorts:
    inbound, outbound, admin = free_port(), free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "tulle",
        "proxy",
        "--inbound-addr",
        f"{LOOPBACK}:{inbound}",
        "--outbound-addr",
        f"{LOOPBACK}:{outbound}",
        "--admin-addr",
        f"{LOOPBACK}:{admin}",
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    if app_port is not None:
        argv += ["--app-addr", f"{LOOPBACK}:{app_port}"]
    if dst_port is not None:
        argv += ["--static-dst", f"{SERVICE}={LOOPBACK}:{dst_port}"]
    process = processes.start(name, argv)
    wait_until(process, name, lambda: http_ok(admin, "/ready"))
    return ProxyPorts(process, inbound, outbound, admin)


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{
        server {host}:{backend_port};
        keepalive 64;
    }}
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


def start_nginx(processes: Processes, work_dir: Path, backend_port: int) -> tuple[int, int]:
    """nginx as a reverse proxy; returns (port, worker pid)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise BenchError("nginx is not installed (apt-get install -y nginx)")
    nginx_dir = work_dir / "nginx"
    nginx_dir.mkdir()
    port = free_port()
    config = nginx_dir / "nginx.conf"
    config.write_text(
        NGINX_CONF.format(dir=nginx_dir, host=LOOPBACK, backend_port=backend_port, port=port)
    )
    process = processes.start(
        "nginx", [binary, "-p", str(nginx_dir), "-c", str(config), "-g", "daemon off;"]
    )
    wait_until(process, "nginx", lambda: http_ok(port, "/"))
    workers = descendants(process.pid)
    if not workers:
        raise BenchError("nginx started no worker process")
    return port, workers[0]


_LATENCY_LINE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RPS_LINE = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL_LINE = re.compile(r"(\d+) requests in")
_ERRORS_LINE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    rps = _RPS_LINE.search(output)
    total = _TOTAL_LINE.search(output)
    if rps is None or total is None:
        raise BenchError(f"could not read wrk's output:\n{output}")
    percentiles = {
        match.group(1): float(match.group(2)) * _UNIT_MS[match.group(3)]
        for match in _LATENCY_LINE.finditer(output)
    }
    errors = 0
    if socket_errors := _ERRORS_LINE.search(output):
        errors += sum(int(group) for group in socket_errors.groups())
    if non_2xx := _NON_2XX_LINE.search(output):
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles.get("99", float("nan")),
        requests=int(total.group(1)),
        errors=errors,
    )


def run_wrk(target: Target, connections: int, duration_s: float) -> WrkResult:
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    argv = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency"]
    if target.host_header:
        argv += ["-H", f"Host: {target.host_header}"]
    argv.append(target.url)
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if completed.returncode != 0:
        raise BenchError(f"wrk failed on {target.name}: {completed.stderr}")
    return parse_wrk(completed.stdout)


@contextlib.contextmanager
def strace_counting(pids: Sequence[int], log: Path) -> Iterator[None]:
    binary = shutil.which("strace")
    if binary is None:
        raise BenchError("strace is not installed (apt-get install -y strace)")
    argv = [binary, "-c", "-f", "-o", str(log)]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Attaching takes a moment; requests sent before it would go uncounted.
    time.sleep(1.0)
    try:
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)


def strace_total_calls(log: Path) -> tuple[int, dict[str, int]]:
    """Total syscalls and the per-call counts from `strace -c` output."""
    per_call: dict[str, int] = {}
    total = 0
    for line in log.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0][0].isdigit():
            continue
        name = fields[-1]
        # Columns: %time seconds usecs/call calls [errors] syscall
        calls = int(fields[3])
        if name == "total":
            total = calls
        else:
            per_call[name] = calls
    return total, per_call


def syscalls_per_request(
    target: Target, pids: Sequence[int], work_dir: Path, label: str
) -> tuple[float, dict[str, float]]:
    log = work_dir / f"strace-{label}.txt"
    with strace_counting(pids, log):
        result = run_wrk(target, 1, STRACE_SECONDS)
    total, per_call = strace_total_calls(log)
    requests = max(result.requests, 1)
    top = dict(sorted(per_call.items(), key=lambda item: -item[1])[:4])
    return total / requests, {name: calls / requests for name, calls in top.items()}


def format_ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 s runs, no warm-up")
    parser.add_argument("--strace", action="store_true", help="syscalls per request (strace -c)")
    args = parser.parse_args(argv)
    duration = 3.0 if args.quick else args.duration
    warmup = 0.0 if args.quick else 2.0
    with tempfile.TemporaryDirectory(prefix="tulle-bench-") as temp:
        work_dir = Path(temp)
        processes = Processes(work_dir)
        try:
            return _run(processes, work_dir, duration, warmup, args.strace)
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            for log in sorted(work_dir.glob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
                if tail:
                    print(f"--- {log.name}\n{tail}", file=sys.stderr)
            return 1
        finally:
            processes.close()


def _run(processes: Processes, work_dir: Path, duration: float, warmup: float, strace: bool) -> int:
    backend_port = start_backend(processes)
    proxy_a = start_proxy(processes, "proxy-a", app_port=backend_port, dst_port=backend_port)
    idle_rss_kib = tree_rss_kib(proxy_a.process.pid)
    proxy_b = start_proxy(processes, "proxy-b", app_port=None, dst_port=proxy_a.inbound)
    nginx_port, nginx_worker = start_nginx(processes, work_dir, backend_port)
    targets = [
        Target("direct", "wrk -> backend", backend_port),
        Target(
            "tulle-1",
            "wrk -> Tulle outbound -> backend",
            proxy_a.outbound,
            SERVICE,
        ),
        Target(
            "tulle-2",
            "wrk -> Tulle outbound -> Tulle inbound -> backend",
            proxy_b.outbound,
            SERVICE,
        ),
        Target("nginx", "wrk -> nginx (1 worker, keepalive) -> backend", nginx_port),
    ]
    for target in targets:
        if not http_ok(target.port, "/", target.host_header):
            raise BenchError(f"{target.name} does not answer 200 on /")
    results: dict[tuple[str, int], WrkResult] = {}
    for target in targets:
        for connections in CONCURRENCIES:
            if warmup:
                run_wrk(target, connections, warmup)
            result = run_wrk(target, connections, duration)
            results[(target.name, connections)] = result
            print(
                f"  {target.name:8} c={connections:<3} {result.requests_per_s:>10.0f} req/s  "
                f"p50 {format_ms(result.p50_ms)} ms  p99 {format_ms(result.p99_ms)} ms"
                + (f"  ERRORS {result.errors}" if result.errors else ""),
                file=sys.stderr,
                flush=True,
            )
    loaded_rss_kib = tree_rss_kib(proxy_a.process.pid)
    strace_rows: list[tuple[str, float, dict[str, float]]] = []
    if strace:
        proxy_pids = [proxy_a.process.pid, *descendants(proxy_a.process.pid)]
        strace_rows.append(
            ("Tulle (1 hop)", *syscalls_per_request(targets[1], proxy_pids, work_dir, "tulle"))
        )
        strace_rows.append(
            ("nginx worker", *syscalls_per_request(targets[3], [nginx_worker], work_dir, "nginx"))
        )
    print(render(targets, results, duration, idle_rss_kib, loaded_rss_kib, strace_rows))
    return 0


def render(
    targets: Sequence[Target],
    results: dict[tuple[str, int], WrkResult],
    duration: float,
    idle_rss_kib: int,
    loaded_rss_kib: int,
    strace_rows: Sequence[tuple[str, float, dict[str, float]]],
) -> str:
    lines = [
        f"### HTTP/1.1, 13-byte responses, keep-alive (wrk -t1, {duration:.0f} s per run, "
        f"{os.cpu_count()} CPUs shared by wrk, proxies and backend)",
        "",
        "| target | path | c | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        for connections in CONCURRENCIES:
            result = results[(target.name, connections)]
            lines.append(
                f"| {target.name} | {target.description} | {connections} | "
                f"{result.requests_per_s:.0f} | {format_ms(result.p50_ms)} | "
                f"{format_ms(result.p99_ms)} | {result.errors} |"
            )

    def ratio(numerator: str, denominator: str, connections: int) -> str:
        top = results[(numerator, connections)].requests_per_s
        bottom = results[(denominator, connections)].requests_per_s
        return f"{top / bottom:.2f}x" if bottom else "n/a"

    direct_p50 = results[("direct", 1)].p50_ms
    hop1_added = results[("tulle-1", 1)].p50_ms - direct_p50
    hop2_added = (results[("tulle-2", 1)].p50_ms - direct_p50) / 2
    nginx_added = results[("nginx", 1)].p50_ms - direct_p50
    lines += [
        "",
        "| ratio | c=1 | c=50 |",
        "|---|---:|---:|",
        *(
            f"| {label} | {ratio(top, bottom, 1)} | {ratio(top, bottom, 50)} |"
            for label, top, bottom in (
                ("Tulle 1 hop / direct", "tulle-1", "direct"),
                ("Tulle 2 hops / direct", "tulle-2", "direct"),
                ("Tulle 1 hop / nginx", "tulle-1", "nginx"),
                ("Tulle 2 hops / nginx", "tulle-2", "nginx"),
            )
        ),
        "",
        f"- added p50 per hop at c=1: Tulle 1 hop {hop1_added:.3f} ms, "
        f"Tulle 2 hops {hop2_added:.3f} ms per hop, nginx {nginx_added:.3f} ms",
        f"- proxy RSS: idle after start {idle_rss_kib / 1024:.1f} MiB, "
        f"after the runs {loaded_rss_kib / 1024:.1f} MiB",
    ]
    if strace_rows:
        lines += [
            "",
            f"| syscalls per request (strace -c -f, c=1, {STRACE_SECONDS:.0f} s) "
            "| total | top calls |",
            "|---|---:|---|",
        ]
        for label, per_request, top in strace_rows:
            tops = ", ".join(f"{name} {count:.2f}" for name, count in top.items())
            lines.append(f"| {label} | {per_request:.2f} | {tops} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
