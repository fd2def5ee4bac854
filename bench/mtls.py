"""mTLS cost on raw sockets: kept-alive echo throughput and new handshakes per second.

A first measurement of what Tulle's mutual TLS 1.3 costs before any proxy code
is involved: an echo server in its own process (uvloop, asyncio.Protocol) and a
load generator in this one, on 127.0.0.1, with contexts from `CertManager`
(ECDSA P-256 leaves, TLS 1.3, both sides verified).

    python bench/mtls.py                      # defaults: 3 s per case
    python bench/mtls.py --seconds 5 --connections 1,16 --size 64 --json

Cases:
- keep-alive: C connections, each sending SIZE bytes and waiting for the echo
  (one request in flight per connection); requests/s, plaintext vs mTLS.
- handshakes: connect, handshake, one echo, close, over and over with C in
  parallel; connections/s, plaintext vs mTLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import uvloop

from tulle.identity.client import CertManager
from tulle.identity.store import IssuerMaterial

LOOPBACK = "127.0.0.1"
CLIENT_ID = "spiffe://bench.local/ns/bench/sa/client"
SERVER_ID = "spiffe://bench.local/ns/bench/sa/server"


class EchoServerProtocol(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _serve(
    ready: Connection,
    server_context: ssl.SSLContext | None,
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        plain = await loop.create_server(EchoServerProtocol, LOOPBACK, 0, backlog=1024)
        secure = await loop.create_server(
            EchoServerProtocol, LOOPBACK, 0, ssl=server_context, backlog=1024
        )
        ports = [s.sockets[0].getsockname()[1] for s in (plain, secure)]
        ready.send(ports)
        await loop.run_in_executor(None, ready.recv)  # parent says stop

    run(main())


class EchoClientProtocol(asyncio.Protocol):
    """Sends a message, waits for all of it to come back, repeats until `deadline`."""

    def __init__(
        self, message: bytes, deadline: float, done: asyncio.Future[int], autostart: bool = True
    ) -> None:
        self.message = message
        self.deadline = deadline
        self.done = done
        self.autostart = autostart
        self.pending = 0
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        if self.autostart:
            self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.pending = len(self.message)
        self.transport.write(self.message)

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending > 0:
            return
        self.count += 1
        if time.perf_counter() < self.deadline:
            self.send()
        elif not self.done.done():
            self.done.set_result(self.count)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def keep_alive_rate(
    port: int, context: ssl.SSLContext | None, connections: int, size: int, seconds: float
) -> float:
    loop = asyncio.get_running_loop()
    message = b"x" * size
    protocols: list[EchoClientProtocol] = []
    futures: list[asyncio.Future[int]] = []
    # Connect everyone first so that handshakes are not counted in the rate.
    for _ in range(connections):
        done: asyncio.Future[int] = loop.create_future()
        protocol = EchoClientProtocol(message, 0.0, done, autostart=False)
        transport, _ = await loop.create_connection(
            lambda p=protocol: p, LOOPBACK, port, ssl=context, server_hostname=None
        )
        protocol.transport = transport  # connection_made may come later
        protocols.append(protocol)
        futures.append(done)
    begin = time.perf_counter()
    for protocol in protocols:
        protocol.deadline = begin + seconds
        protocol.send()
    counts = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - begin
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
    return sum(counts) / elapsed


async def handshake_rate(
    port: int, context: ssl.SSLContext | None, connections: int, seconds: float
) -> float:
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    completed = 0

    async def worker() -> None:
        nonlocal completed
        while time.perf_counter() < deadline:
            done: asyncio.Future[int] = loop.create_future()
            # deadline 0: exactly one echo per connection.
            transport, _ = await loop.create_connection(
                lambda done=done: EchoClientProtocol(b"ping", 0.0, done),
                LOOPBACK,
                port,
                ssl=context,
                server_hostname=None,
            )
            await done
            transport.close()
            completed += 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return completed / (time.perf_counter() - begin)


@dataclass
class Result:
    case: str
    connections: int
    plaintext: float
    mtls: float

    @property
    def ratio(self) -> float:
        return self.mtls / self.plaintext if self.plaintext else 0.0


async def _certificates() -> tuple[CertManager, CertManager]:
    material = IssuerMaterial.generate("bench.local", now=time.time())
    managers = (
        CertManager.from_local_issuer(SERVER_ID, material, alpn_protocols=["tulle.opaque"]),
        CertManager.from_local_issuer(CLIENT_ID, material, alpn_protocols=["tulle.opaque"]),
    )
    for manager in managers:
        await manager.renew()  # one leaf each; no background renewal during a benchmark
    return managers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    parser.add_argument("--connections", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop on both sides"
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.connections.split(",")]

    server_manager, client_manager = asyncio.run(_certificates())
    server_context = server_manager.server_context()
    client_context = client_manager.client_context()

    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    server = ctx.Process(target=_serve, args=(child_end, server_context, run), daemon=True)
    server.start()
    try:
        plain_port, tls_port = parent_end.recv()
        results = run(
            _run_cases(plain_port, tls_port, client_context, levels, args.size, args.seconds)
        )
    finally:
        parent_end.send("stop")
        server.join(5)
        if server.is_alive():
            server.kill()
            server.join()
    _report(results, args, as_json=args.json)
    return 0


async def _run_cases(
    plain_port: int,
    tls_port: int,
    client_context: ssl.SSLContext,
    levels: list[int],
    size: int,
    seconds: float,
) -> list[Result]:
    results: list[Result] = []
    cases: list[tuple[str, Callable[[int, ssl.SSLContext | None, int], object]]] = [
        ("keep-alive req/s", lambda p, c, n: keep_alive_rate(p, c, n, size, seconds)),
        ("new connections/s", lambda p, c, n: handshake_rate(p, c, n, seconds)),
    ]
    for name, run in cases:
        for level in levels:
            plaintext = await run(plain_port, None, level)  # type: ignore[misc]
            mtls = await run(tls_port, client_context, level)  # type: ignore[misc]
            results.append(Result(name, level, plaintext, mtls))
    return results


def _report(results: list[Result], args: argparse.Namespace, *, as_json: bool) -> None:
    if as_json:
        rows = [
            {
                "case": r.case,
                "connections": r.connections,
                "plaintext": round(r.plaintext),
                "mtls": round(r.mtls),
                "ratio": round(r.ratio, 3),
            }
            for r in results
        ]
        json.dump(
            {"size": args.size, "seconds": args.seconds, "cpus": os.cpu_count(), "results": rows},
            sys.stdout,
            indent=2,
        )
        print()
        return
    print(
        f"mTLS 1.3 (ECDSA P-256, both sides verified) vs plaintext, {args.size}-byte messages, "
        f"{args.seconds:g} s per case, {args.loop}, 127.0.0.1, {os.cpu_count()} CPUs"
    )
    print(f"{'case':<20}{'conns':>6}{'plaintext':>12}{'mTLS':>12}{'mTLS/plain':>12}")
    for r in results:
        print(
            f"{r.case:<20}{r.connections:>6}{r.plaintext:>12,.0f}{r.mtls:>12,.0f}{r.ratio:>12.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
