"""HTTP/2 and gRPC benchmark: Tulle's HTTP/2 stream proxy against direct calls, in one run.

HTTP/2 (h2load, `nghttp2-client`), all on 127.0.0.1, against nginx serving a
13-byte body over prior-knowledge h2c (1 worker: a fast h2 backend):

* direct   -- h2load -> nginx
* tulle-1  -- h2load -> proxy -> nginx
* tulle-2  -- h2load -> proxy A -> proxy B -> nginx   (proxy-to-proxy stays HTTP/2)

gRPC unary (many calls over few connections: h2load sending gRPC-framed
Echo/Unary requests, c=2 connections x m=50 streams) against the test gRPC
server (grpcio aio, tests/integration/http2/grpc_service):

* grpc-direct  -- h2load -> gRPC server
* grpc-tulle-1 -- h2load -> proxy -> gRPC server

With `--proxy harness` (default) each hop is `H2ServerProtocol` on uvloop
with a static route, run by tests/integration/http2/h2proxy_harness.py: the
HTTP/2 stream proxy alone. With `--proxy tulle` each hop is a real `tulle
proxy` (one worker: detection, routing, P2C balancer, metrics); two hops are
A's outbound -> B's inbound -> nginx. For each target the script prints req/s,
mean latency, the ratio to direct, and the proxy's CPU time per stream (from
/proc/<pid>/stat: user+system, summed over the hops), which is the cost per
stream, then the mean latency at c=1 m=1 and what each hop adds to it.
`--profile` re-runs tulle-1 under cProfile and prints the top
functions and the share of time spent inside h2/hpack/hyperframe.

Usage: python bench/http2.py [--duration 5] [--profile] [--proxy harness|tulle]
Needs: h2load (apt-get install nghttp2-client), nginx.
"""

from __future__ import annotations

import argparse
import http.client
import os
import pstats
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
HTTP2_TESTS = ROOT / "tests" / "integration" / "http2"
# Prepended to PYTHONPATH, not replacing it: the harness must run the tulle
# under test (a worktree's src), not whichever copy is installed.
_TEST_ENV = {
    "PYTHONPATH": os.pathsep.join(p for p in (str(HTTP2_TESTS), os.environ.get("PYTHONPATH")) if p)
}
HARNESS = HTTP2_TESTS / "h2proxy_harness.py"
READY_TIMEOUT_S = 20.0
AUTHORITY = "bench"
H2_LIBRARIES = ("/h2/", "/hpack/", "/hyperframe/")


class BenchError(Exception):
    pass


@dataclass
class LoadResult:
    requests_per_s: float
    mean_ms: float
    succeeded: int
    failed: int
    proxy_cpu_s: float

    @property
    def cpu_us_per_stream(self) -> float:
        return self.proxy_cpu_s / self.succeeded * 1e6 if self.succeeded else 0.0


class Processes:
    """Every child this benchmark starts; `close()` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.children.append(process)
        return process

    def listening_port(self, name: str, process: subprocess.Popen[bytes]) -> int:
        """Wait for the `LISTENING <port>` line the harness and test servers print."""
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"{name} exited ({process.returncode}): {path.read_text()}")
            match = re.search(r"^LISTENING (\d+)$", path.read_text(), re.MULTILINE)
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        raise BenchError(f"{name} did not start within {READY_TIMEOUT_S} s")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        for process in reversed(self.children):
            self.stop(process)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_port(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on {port}")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children_file in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(child) for child in children_file.read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            pending.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its workers (the real proxy forks them)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for member in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def start_nginx(procs: Processes, work: Path) -> int:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    # nginx closes an h2 connection after keepalive_requests streams (1000).
    keepalive_requests 100000000;
    server {{
        listen {LOOPBACK}:{port} http2;
        location / {{ return 200 "hello, world!"; }}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs.start("nginx", [nginx, "-c", str(conf), "-e", str(work / "nginx-error.log")])
    wait_port(port)
    return port


def start_hop(
    procs: Processes, name: str, upstream_port: int, profile: Path | None = None
) -> tuple[int, subprocess.Popen[bytes]]:
    argv = [sys.executable, str(HARNESS), "--port", "0"]
    argv += ["--route", f"{AUTHORITY}={LOOPBACK}:{upstream_port}"]
    if profile is not None:
        argv += ["--profile", str(profile)]
    process = procs.start(name, argv, env=_TEST_ENV)
    return procs.listening_port(name, process), process


def admin_ready(port: int) -> bool:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=1)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start_tulle(
    procs: Processes, name: str, *, app_port: int | None = None, dst_port: int | None = None
) -> tuple[int, int, subprocess.Popen[bytes]]:
    """A real `tulle proxy` (1 worker); returns its (outbound, inbound) ports and process."""
    inbound, outbound, admin = free_port(), free_port(), free_port()
    argv = [sys.executable, "-m", "tulle", "proxy", "--workers", "1", "--log-level", "warning"]
    argv += ["--inbound-addr", f"{LOOPBACK}:{inbound}", "--outbound-addr", f"{LOOPBACK}:{outbound}"]
    argv += ["--admin-addr", f"{LOOPBACK}:{admin}"]
    if app_port is not None:
        argv += ["--app-addr", f"{LOOPBACK}:{app_port}"]
    if dst_port is not None:
        argv += ["--static-dst", f"{AUTHORITY}={LOOPBACK}:{dst_port}"]
    process = procs.start(name, argv)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not admin_ready(admin):
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{name} did not become ready: {(procs.log_dir / name).name}")
        time.sleep(0.05)
    return outbound, inbound, process


def start_grpc_server(procs: Processes) -> int:
    process = procs.start(
        "grpc-server",
        [sys.executable, "-m", "grpc_service.server", "--port", "0"],
        env=_TEST_ENV,
    )
    return procs.listening_port("grpc-server", process)


def grpc_request_file(work: Path) -> Path:
    sys.path.insert(0, str(HTTP2_TESTS))
    from grpc_service import echo_pb2

    message = echo_pb2.EchoRequest(payload=b"hello, world!").SerializeToString()
    path = work / "unary.bin"
    path.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    return path


def h2load(
    port: int,
    *,
    duration: float,
    clients: int,
    streams: int,
    proxies: Sequence[subprocess.Popen[bytes]],
    grpc_body: Path | None = None,
) -> LoadResult:
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(int(duration))]
    argv += ["-H", f":authority: {AUTHORITY}"]
    url = f"http://{LOOPBACK}:{port}/"
    if grpc_body is not None:
        argv += ["-d", str(grpc_body), "-H", "content-type: application/grpc"]
        argv += ["-H", "te: trailers"]
        url = f"http://{LOOPBACK}:{port}/tulle.test.echo.Echo/Unary"
    before = sum(cpu_seconds(p.pid) for p in proxies)
    run = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    proxy_cpu = sum(cpu_seconds(p.pid) for p in proxies) - before
    out = run.stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    counts = re.search(r"requests: .* (\d+) succeeded, (\d+) failed", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if not (rate and counts and mean):
        raise BenchError(f"cannot read h2load's output:\n{out}\n{run.stderr}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)]
    return LoadResult(
        requests_per_s=float(rate.group(1)),
        mean_ms=float(mean.group(1)) * scale,
        succeeded=int(counts.group(1)),
        failed=int(counts.group(2)),
        proxy_cpu_s=proxy_cpu,
    )


def print_table(title: str, rows: list[tuple[str, str, LoadResult]]) -> None:
    base = rows[0][2].requests_per_s
    print(f"\n### {title}\n")
    print("| target | path | req/s | mean ms | x direct | failed | proxy CPU us/stream |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, path, r in rows:
        cpu = f"{r.cpu_us_per_stream:.0f}" if r.proxy_cpu_s else "-"
        print(
            f"| {name} | {path} | {r.requests_per_s:,.0f} | {r.mean_ms:.2f} | "
            f"{r.requests_per_s / base:.2f} | {r.failed} | {cpu} |"
        )


def print_profile(path: Path, limit: int = 15) -> None:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())  # tottime over every function
    in_h2 = sum(v[2] for k, v in entries.items() if any(lib in k[0] for lib in H2_LIBRARIES))
    in_tulle = sum(v[2] for k, v in entries.items() if "/tulle/" in k[0])
    print("\n### Profile of one hop (cProfile, tottime)\n")
    print(
        f"h2/hpack/hyperframe: {in_h2 / total:.0%} of profiled time; "
        f"tulle's own code: {in_tulle / total:.0%}; the rest is the event loop, "
        "builtins and socket calls.\n"
    )
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:limit]
    print("| function | tottime s | calls |")
    print("|---|---:|---:|")
    for (file, line, func), (_, calls, tottime, _, _) in ranked:
        short = "/".join(Path(file).parts[-2:]) if file != "~" else "builtin"
        print(f"| {short}:{line} {func} | {tottime:.3f} | {calls} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per target")
    parser.add_argument("--clients", type=int, default=10, help="h2load connections (h2)")
    parser.add_argument("--streams", type=int, default=10, help="h2load streams per connection")
    parser.add_argument("--profile", action="store_true", help="profile one hop with cProfile")
    parser.add_argument("--skip-grpc", action="store_true", help="only the h2load h2 runs")
    parser.add_argument(
        "--proxy",
        choices=("harness", "tulle"),
        default="harness",
        help="harness: H2ServerProtocol alone (StaticDispatcher); tulle: the real "
        "`tulle proxy` (routing, balancer, metrics), one worker",
    )
    args = parser.parse_args()
    for tool in ("h2load", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"bench/http2.py needs {tool}")

    work = Path(tempfile.mkdtemp(prefix="tulle-bench-h2-"))
    procs = Processes(work)
    load = {"duration": args.duration, "clients": args.clients, "streams": args.streams}
    try:
        nginx_port = start_nginx(procs, work)
        one_hop: tuple[int, list[subprocess.Popen[bytes]]]
        two_hops: tuple[int, list[subprocess.Popen[bytes]]]
        if args.proxy == "tulle":
            # One hop: an outbound -> nginx. Two hops: A's outbound -> B's
            # inbound -> nginx (B's app), HTTP/2 between the proxies.
            one_port, _, one_proxy = start_tulle(procs, "proxy-one", dst_port=nginx_port)
            _, b_inbound, proxy_b = start_tulle(procs, "proxy-b", app_port=nginx_port)
            a_outbound, _, proxy_a = start_tulle(procs, "proxy-a", dst_port=b_inbound)
            one_hop = (one_port, [one_proxy])
            two_hops = (a_outbound, [proxy_a, proxy_b])
        else:
            b_port, hop_b = start_hop(procs, "hop-b", nginx_port)
            a_port, hop_a = start_hop(procs, "hop-a", b_port)
            one_hop = (b_port, [hop_b])
            two_hops = (a_port, [hop_a, hop_b])
        rows = [
            ("direct", "h2load -> nginx", h2load(nginx_port, proxies=[], **load)),
            ("tulle-1", "h2load -> proxy -> nginx", h2load(one_hop[0], proxies=one_hop[1], **load)),
            (
                "tulle-2",
                "h2load -> proxy -> proxy -> nginx",
                h2load(two_hops[0], proxies=two_hops[1], **load),
            ),
        ]
        print(
            f"proxy: {args.proxy}; c={args.clients} m={args.streams}, "
            f"{args.duration:.0f} s per target"
        )
        print_table("HTTP/2 (h2load, 13-byte responses)", rows)

        # One stream at a time: the latency each hop adds, without queueing.
        single = {"duration": args.duration, "clients": 1, "streams": 1}
        latency = [
            h2load(nginx_port, proxies=[], **single).mean_ms,
            h2load(one_hop[0], proxies=one_hop[1], **single).mean_ms,
            h2load(two_hops[0], proxies=two_hops[1], **single).mean_ms,
        ]
        print(
            f"\nc=1 m=1 mean latency: direct {latency[0]:.3f} ms, one hop "
            f"{latency[1]:.3f} ms, two hops {latency[2]:.3f} ms; added per hop "
            f"{(latency[2] - latency[0]) / 2:.3f} ms"
        )

        if not args.skip_grpc:
            grpc_port = start_grpc_server(procs)
            if args.proxy == "tulle":
                grpc_hop_port, _, grpc_hop = start_tulle(procs, "grpc-proxy", dst_port=grpc_port)
            else:
                grpc_hop_port, grpc_hop = start_hop(procs, "grpc-hop", grpc_port)
            body = grpc_request_file(work)
            grpc_load = {"duration": args.duration, "clients": 2, "streams": 50}
            grpc_rows = [
                ("grpc-direct", "h2load -> grpc server",
                 h2load(grpc_port, proxies=[], grpc_body=body, **grpc_load)),
                ("grpc-tulle-1", "h2load -> proxy -> grpc server",
                 h2load(grpc_hop_port, proxies=[grpc_hop], grpc_body=body, **grpc_load)),
            ]  # fmt: skip
            print_table("gRPC unary (2 connections x 50 streams, Echo/Unary)", grpc_rows)

        if args.profile:
            profile = work / "hop.prof"
            port, hop = start_hop(procs, "profiled-hop", nginx_port, profile=profile)
            h2load(port, proxies=[hop], **load)
            procs.stop(hop)
            print_profile(profile)
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from None
