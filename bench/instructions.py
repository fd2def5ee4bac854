"""Instructions per proxied request, counted by callgrind: two source trees, one run.

Wall-clock benchmarks on a shared two-core machine swing by tens of percent
between runs; the number of instructions a proxy executes per request does
not. This script runs the same proxy setup from each given source tree under
`valgrind --tool=callgrind` and prints instructions per request and the
ratio of each tree to the first, so a hot-path change can be judged (the
project's bar: no more than 3 % worse) whatever else the machine is doing.

What it measures, per tree (everything on 127.0.0.1):

* http1 -- one keep-alive HTTP/1.1 client -> proxy outbound
  (`--static-dst bench=backend`) -> a backend. By default (`--h1-heads
  browser`, issue 15's workload, as bench/peers.py runs it) each request
  carries the 8 browser-like headers of bench/peers.py and the backend, run
  by this script, answers with nginx's default response headers (Server,
  Date, Content-Type, Content-Length, Last-Modified, Connection, ETag,
  Accept-Ranges) and a 13-byte body; `--h1-heads minimal` is the earlier
  count: Host only, against `tulle demo backend`'s two-header answers;
* http2 -- one prior-knowledge h2c client (the `h2` library, one stream at a
  time) -> the same proxy -> an h2c backend run by this script;
* grpc -- the same h2c client and backend, each stream a gRPC unary call:
  POST with a 20-byte gRPC message, answered with HEADERS, a 20-byte message
  and `grpc-status: 0` trailers (the frames of a real call, no grpcio).

`--hops plain|mtls` puts a second proxy in the path: client -> proxy B
outbound -> proxy A inbound -> backend, the B -> A hop plaintext or mTLS
(both proxies holding identities from a local issuer, B checking A's), and
counts both proxies' instructions: the mesh-TLS cost per request, countable
on a noisy machine (`--hops mtls` against `--hops plain` of the same tree,
or two trees under `--hops mtls`).

Instrumentation is switched on after a warm-up (`callgrind_control -i on`),
and the count is taken at two request counts so start-up and warm-up cancel
out: (Ir@N2 - Ir@N1) / (N2 - N1).

Usage: python bench/instructions.py TREE [TREE ...] [--protocol http1|http2|grpc|both]
                                    [--hops one|plain|mtls] [--h1-heads browser|minimal]
       e.g. git worktree add /tmp/base <rev>; python bench/instructions.py /tmp/base .
Needs: valgrind (apt-get install -y valgrind).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
SERVICE = "bench"
# One gRPC message: no compression, 15 bytes (a protobuf bytes field holding "hello, world!").
GRPC_MESSAGE = b"\x00\x00\x00\x00\x0f\x0a\x0dhello, world!"
WARMUP_REQUESTS = 300
READY_TIMEOUT_S = 400.0  # the proxies start under valgrind: tens of times slower (identity: more)


class BenchError(Exception):
    """A missing tool or a component that would not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# bench/peers.py's BROWSER_HEADERS (issue 15's workload), as a dict for http.client;
# with Accept-Encoding given, http.client adds none of its own.
BROWSER_HEADERS = {
    "Host": SERVICE,
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.7,fr;q=0.3",
    "Accept-Encoding": "gzip, deflate, br",
    "Referer": "http://bench/index.html",
    "Cookie": "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark",
    "Cache-Control": "max-age=0",
    "Upgrade-Insecure-Requests": "1",
}
MINIMAL_HEADERS = {"Host": SERVICE}
# What nginx 1.22 answers for a static 13-byte file, header for header.
NGINX_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Fri, 27 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 13\r\n"
    b"Last-Modified: Fri, 27 Nov 2026 14:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6927d9e0-d"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
    b"hello, world!"
)
_request_headers = BROWSER_HEADERS


def http1_get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/", headers=_request_headers)
    response = conn.getresponse()
    response.read()
    return response.status


def wait_http1(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
            try:
                if http1_get(conn) == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.3)
    raise BenchError(f"nothing answered 200 on {LOOPBACK}:{port} within {READY_TIMEOUT_S:.0f} s")


class H2Client:
    """A blocking h2c client doing one stream at a time (enough to count work per stream)."""

    def __init__(self, port: int) -> None:
        import h2.config
        import h2.connection

        self.sock = socket.create_connection((LOOPBACK, port), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, grpc: bool = False) -> int:
        """One stream: a GET, or a gRPC unary call (the status is then 200 only
        when the trailers said grpc-status 0)."""
        import h2.events

        stream_id = self.conn.get_next_available_stream_id()
        if grpc:
            headers = [
                (":method", "POST"), (":path", "/tulle.test.echo.Echo/Unary"),
                (":scheme", "http"), (":authority", SERVICE),
                ("content-type", "application/grpc"), ("te", "trailers"),
            ]  # fmt: skip
            self.conn.send_headers(stream_id, headers)
            self.conn.send_data(stream_id, GRPC_MESSAGE, end_stream=True)
        else:
            headers = [
                (":method", "GET"),
                (":path", "/"),
                (":scheme", "http"),
                (":authority", SERVICE),
            ]
            self.conn.send_headers(stream_id, headers, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        status = 0
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("the proxy closed the h2 connection")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.TrailersReceived):
                    if dict(event.headers).get(b"grpc-status") != b"0":
                        status = 0
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    self.sock.sendall(self.conn.data_to_send())
                    return status
                elif isinstance(event, h2.events.StreamReset):
                    raise BenchError(f"stream reset by the proxy: {event.error_code}")
            self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()


def serve_h2c(listener: socket.socket, stop: threading.Event) -> None:
    """A tiny h2c backend, one thread per connection: a 13-byte body for every
    stream, or for a gRPC call (content-type application/grpc) one message and
    `grpc-status: 0` trailers, sent once the request has ended."""
    import h2.config
    import h2.connection
    import h2.events

    def respond(conn: h2.connection.H2Connection, stream_id: int, grpc: bool) -> None:
        if grpc:
            conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            conn.send_data(stream_id, GRPC_MESSAGE)
            conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        else:
            conn.send_headers(stream_id, [(":status", "200"), ("content-length", "13")])
            conn.send_data(stream_id, b"Hello, Tulle\n", end_stream=True)

    def handle(sock: socket.socket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        grpc_calls: dict[int, bool] = {}
        with sock:
            while not stop.is_set():
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        grpc_calls[event.stream_id] = (
                            dict(event.headers).get(b"content-type") == b"application/grpc"
                        )
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        respond(conn, event.stream_id, grpc_calls.pop(event.stream_id, False))
                sock.sendall(conn.data_to_send())

    accept_loop(listener, stop, handle)


def serve_nginx_like(listener: socket.socket, stop: threading.Event) -> None:
    """An HTTP/1.1 backend answering every GET head with NGINX_RESPONSE
    (keep-alive, one thread per connection; requests have no body)."""

    def handle(sock: socket.socket) -> None:
        pending = b""
        with sock:
            while not stop.is_set():
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                pending += data
                heads = pending.count(b"\r\n\r\n")
                if heads:
                    pending = pending[pending.rindex(b"\r\n\r\n") + 4 :]
                    sock.sendall(NGINX_RESPONSE * heads)

    accept_loop(listener, stop, handle)


def accept_loop(
    listener: socket.socket, stop: threading.Event, handle: Callable[[socket.socket], None]
) -> None:
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        sock.settimeout(None)
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


@contextlib.contextmanager
def backend(tree: Path, protocol: str) -> Iterator[int]:
    env = dict(os.environ, PYTHONPATH=f"{tree}/src")
    if protocol == "http1" and _request_headers is MINIMAL_HEADERS:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tulle", "demo", "backend", "--addr", f"{LOOPBACK}:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http1(port)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(64)
    stop = threading.Event()
    serve = serve_h2c if protocol in ("http2", "grpc") else serve_nginx_like
    thread = threading.Thread(target=serve, args=(listener, stop), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def read_total(out_prefix: str) -> int:
    total = 0
    for path in glob.glob(out_prefix + "*"):
        with open(path, encoding="utf-8", errors="replace") as dump:
            for line in dump:
                match = re.match(r"(?:summary|totals): (\d+)", line)
                if match:
                    total = max(total, int(match.group(1)))
    return total


WEB = "spiffe://bench.local/ns/default/sa/web"
BOOKS = "spiffe://bench.local/ns/default/sa/books"


def proxy_argv(out: str, ports: tuple[int, int, int], extra: list[str]) -> list[str]:
    outbound, inbound, admin = ports
    return [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        "--trace-children=yes",
        f"--callgrind-out-file={out}",
        sys.executable, "-m", "tulle", "proxy",
        "--outbound-addr", f"{LOOPBACK}:{outbound}",
        "--inbound-addr", f"{LOOPBACK}:{inbound}",
        "--admin-addr", f"{LOOPBACK}:{admin}",
        *extra,
    ]  # fmt: skip


def count(tree: Path, protocol: str, requests: int, workdir: Path, hops: str = "one") -> int:
    """Instructions the proxies executed for `requests` requests after a warm-up."""
    env = dict(os.environ, PYTHONPATH=f"{tree}/src", PYTHONHASHSEED="0")
    out = str(workdir / f"cg-{tree.name}-{protocol}-{hops}-{requests}")
    with backend(tree, protocol) as backend_port:
        argvs: list[list[str]] = []
        entry = free_port()
        if hops == "one":
            argvs.append(
                proxy_argv(
                    out + "-a.out",
                    (entry, free_port(), free_port()),
                    ["--static-dst", f"{SERVICE}={LOOPBACK}:{backend_port}"],
                )
            )
        else:
            a_inbound = free_port()
            a_extra = ["--app-addr", f"{LOOPBACK}:{backend_port}"]
            b_extra = ["--static-dst", f"{SERVICE}={LOOPBACK}:{a_inbound}"]
            if hops == "mtls":
                issuer = workdir / "issuer"
                if not issuer.exists():
                    subprocess.run(
                        [sys.executable, "-m", "tulle", "identity", "init", "--dir",
                         str(issuer), "--trust-domain", "bench.local"],
                        check=True, capture_output=True, env=env,
                    )  # fmt: skip
                a_extra += ["--identity", BOOKS, "--identity-issuer-dir", str(issuer)]
                b_extra[-1] += f"@{BOOKS}"
                b_extra += ["--identity", WEB, "--identity-issuer-dir", str(issuer)]
            argvs.append(proxy_argv(out + "-a.out", (free_port(), a_inbound, free_port()), a_extra))
            argvs.append(proxy_argv(out + "-b.out", (entry, free_port(), free_port()), b_extra))
        proxies = [
            subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for argv in argvs
        ]
        try:
            wait_http1(entry) if protocol == "http1" else wait_h2(entry)
            run = {"http1": http1_run, "http2": http2_run, "grpc": grpc_run}[protocol]
            run(entry, WARMUP_REQUESTS)
            for proxy in proxies:
                control("-i", "on", proxy.pid)
            run(entry, requests)
            for proxy in proxies:
                control("-i", "off", proxy.pid)
                control("-d", "", proxy.pid)
        finally:
            for proxy in proxies:
                proxy.terminate()
            for proxy in proxies:
                proxy.wait(timeout=60)
    return sum(read_total(f"{out}-{side}.out") for side in "ab")


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=2):
            return
        time.sleep(0.3)
    raise BenchError(f"nothing listened on {LOOPBACK}:{port} within {READY_TIMEOUT_S:.0f} s")


def wait_h2(port: int) -> None:
    """Until one h2c stream through the proxies answers 200 (the hop behind
    may still be starting, or fetching its certificate, under valgrind)."""
    wait_listening(port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, BenchError):
            client = H2Client(port)
            try:
                if client.get() == 200:
                    return
            finally:
                client.close()
        time.sleep(0.5)
    raise BenchError(f"no h2c stream answered 200 on {LOOPBACK}:{port} in {READY_TIMEOUT_S:.0f} s")


def control(flag: str, value: str, pid: int) -> None:
    args = ["callgrind_control", flag] + ([value] if value else []) + [str(pid)]
    subprocess.run(args, capture_output=True, check=False, timeout=120)


def http1_run(port: int, requests: int) -> None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        for _ in range(requests):
            status = http1_get(conn)
            if status != 200:
                raise BenchError(f"HTTP/1 request answered {status}")
    finally:
        conn.close()


def http2_run(port: int, requests: int, grpc: bool = False) -> None:
    client = H2Client(port)
    try:
        for _ in range(requests):
            status = client.get(grpc)
            if status != 200:
                raise BenchError(f"HTTP/2 stream answered {status}")
    finally:
        client.close()


def grpc_run(port: int, requests: int) -> None:
    http2_run(port, requests, grpc=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (each has src/tulle)")
    parser.add_argument("--protocol", choices=("http1", "http2", "grpc", "both"), default="both")
    parser.add_argument(
        "--hops",
        choices=("one", "plain", "mtls"),
        default="one",
        help="one proxy, or two with a plaintext or mTLS hop between them (both counted)",
    )
    parser.add_argument(
        "--h1-heads",
        choices=("browser", "minimal"),
        default="browser",
        help="HTTP/1: 8 browser headers and nginx's response headers (issue 15), or Host only",
    )
    parser.add_argument("--low", type=int, default=500, help="requests in the first count")
    parser.add_argument("--high", type=int, default=2500, help="requests in the second count")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind: apt-get install -y valgrind", file=sys.stderr)
        return 2
    global _request_headers
    _request_headers = BROWSER_HEADERS if args.h1_heads == "browser" else MINIMAL_HEADERS
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "src" / "tulle").is_dir():
            print(f"{tree}: no src/tulle in it", file=sys.stderr)
            return 2
    protocols = ("http1", "http2") if args.protocol == "both" else (args.protocol,)
    results: dict[tuple[str, Path], float] = {}
    with tempfile.TemporaryDirectory(prefix="tulle-bench-ir-") as tmp:
        for protocol in protocols:
            for tree in trees:
                print(f"{protocol} {tree} ...", file=sys.stderr, flush=True)
                low = count(tree, protocol, args.low, Path(tmp), args.hops)
                high = count(tree, protocol, args.high, Path(tmp), args.hops)
                results[(protocol, tree)] = (high - low) / (args.high - args.low)
    print(f"hops: {args.hops}; HTTP/1 heads: {args.h1_heads}\n")
    print("| protocol | tree | instructions per request | vs first tree |")
    print("|---|---|---:|---:|")
    for protocol in protocols:
        first = results[(protocol, trees[0])]
        for tree in trees:
            per_request = results[(protocol, tree)]
            print(f"| {protocol} | {tree} | {per_request:,.0f} | {per_request / first:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
