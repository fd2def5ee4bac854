"""mTLS between proxies: two hops with mTLS vs two hops plaintext vs direct, in one run.

    python bench/mtls_hops.py [--duration 8] [--quick]

* direct      -- wrk -> backend
* plain-2     -- wrk -> proxy B outbound -> proxy A inbound -> backend (plaintext hop)
* mtls-2      -- the same, with both proxies holding identities: the B -> A hop is TLS 1.3
                 with both sides verified (pooled, kept-alive connections)

Then the cost of a *new* mTLS connection: a client opens connections to proxy
A's inbound one after another (and 8 at a time), each a full TLS 1.3 handshake
with a client certificate, one request, close -- handshakes per second.

Uses the launchers of bench/http1.py. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http1 as h1

WEB = "spiffe://bench.local/ns/default/sa/web"
BOOKS = "spiffe://bench.local/ns/default/sa/books"


def start_proxy(
    processes: h1.Processes,
    name: str,
    *,
    app_port: int | None,
    dst: str | None,
    identity: str | None,
    issuer: Path | None,
) -> h1.ProxyPorts:
    inbound, outbound, admin = h1.free_port(), h1.free_port(), h1.free_port()
    argv = [
        sys.executable, "-m", "tulle", "proxy",
        "--inbound-addr", f"{h1.LOOPBACK}:{inbound}",
        "--outbound-addr", f"{h1.LOOPBACK}:{outbound}",
        "--admin-addr", f"{h1.LOOPBACK}:{admin}",
        "--log-level", "warning",
    ]  # fmt: skip
    if app_port is not None:
        argv += ["--app-addr", f"{h1.LOOPBACK}:{app_port}"]
    if dst is not None:
        argv += ["--static-dst", f"{h1.SERVICE}={dst}"]
    if identity is not None and issuer is not None:
        argv += ["--identity", identity, "--identity-issuer-dir", str(issuer)]
    process = processes.start(name, argv)
    h1.wait_until(process, name, lambda: h1.http_ok(admin, "/ready"))
    return h1.ProxyPorts(process, inbound, outbound, admin)


async def handshakes(port: int, issuer: Path, seconds: float, parallel: int) -> float:
    from tulle.identity.client import CertManager
    from tulle.net.mtls import ALPN_HTTP1, MeshTls

    certs = CertManager.from_local_issuer(WEB, issuer)
    await certs.start()
    await certs.wait_ready(10)
    context: ssl.SSLContext | None = MeshTls(certs).client_context(ALPN_HTTP1)
    assert context is not None
    request = f"GET / HTTP/1.1\r\nHost: {h1.SERVICE}\r\nConnection: close\r\n\r\n".encode()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(
                h1.LOOPBACK, port, ssl=context, server_hostname=""
            )
            writer.write(request)
            await reader.read()
            writer.close()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    await certs.close()
    return done / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 s runs")
    args = parser.parse_args(argv)
    duration = 3.0 if args.quick else args.duration
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tulle-bench-mtls-") as tmp:
        work = Path(tmp)
        issuer = work / "issuer"
        subprocess.run(
            [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
             "--trust-domain", "bench.local"],
            check=True, capture_output=True,
        )  # fmt: skip
        processes = h1.Processes(work)
        try:
            backend = h1.start_backend(processes)
            plain_a = start_proxy(
                processes, "plain-a", app_port=backend, dst=None, identity=None, issuer=None
            )
            plain_b = start_proxy(
                processes,
                "plain-b",
                app_port=None,
                dst=f"{h1.LOOPBACK}:{plain_a.inbound}",
                identity=None,
                issuer=None,
            )
            mtls_a = start_proxy(
                processes, "mtls-a", app_port=backend, dst=None, identity=BOOKS, issuer=issuer
            )
            mtls_b = start_proxy(
                processes,
                "mtls-b",
                app_port=None,
                dst=f"{h1.LOOPBACK}:{mtls_a.inbound}@{BOOKS}",
                identity=WEB,
                issuer=issuer,
            )
            targets = [
                h1.Target("direct", "wrk -> backend", backend),
                h1.Target("plain-2", "two hops, plaintext", plain_b.outbound, h1.SERVICE),
                h1.Target("mtls-2", "two hops, mTLS between them", mtls_b.outbound, h1.SERVICE),
            ]
            rows = []
            results: dict[tuple[str, int], h1.WrkResult] = {}
            for target in targets:
                for connections in (1, 50):
                    h1.run_wrk(target, connections, 1.0)  # warm-up
                    result = h1.run_wrk(target, connections, duration)
                    results[(target.name, connections)] = result
                    rows.append(
                        f"| {target.name} | {target.description} | {connections} "
                        f"| {result.requests_per_s:.0f} | {h1.format_ms(result.p50_ms)} "
                        f"| {h1.format_ms(result.p99_ms)} |"
                    )
            rate_1 = asyncio.run(handshakes(mtls_a.inbound, issuer, duration, 1))
            rate_8 = asyncio.run(handshakes(mtls_a.inbound, issuer, duration, 8))
        finally:
            processes.close()
    print("### mTLS between proxies (wrk -t1, 13-byte responses, keep-alive)\n")
    print("| target | path | c | req/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print()
    for c in (1, 50):
        mtls = results[("mtls-2", c)].requests_per_s
        plain = results[("plain-2", c)].requests_per_s
        direct = results[("direct", c)].requests_per_s
        print(
            f"- c={c}: mTLS / plaintext = {mtls / plain:.2f}x "
            f"(cost {100 * (1 - mtls / plain):.0f} %), mTLS / direct = {mtls / direct:.2f}x"
        )
    print(
        f"- new mTLS connections to a proxy's inbound (handshake + 1 request): "
        f"{rate_1:.0f}/s one at a time, {rate_8:.0f}/s 8 at a time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
