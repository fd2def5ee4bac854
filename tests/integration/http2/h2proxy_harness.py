"""A stand-alone HTTP/2 proxy for tests and benchmarks: `H2ServerProtocol` behind a listener.

It does what the real proxy's listener does for HTTP/2, and nothing more: it
accepts, reads until the prior-knowledge preface is seen, then hands the
connection over to `H2ServerProtocol` with the bytes read so far, exactly as
the proxy's protocol detection does. Routes come from `--route`, served by
`StaticDispatcher` (round-robin). Two harnesses chained give two hops.

    python h2proxy_harness.py --port 0 --route svc=127.0.0.1:50051,127.0.0.1:50052

It prints `LISTENING <port>` once bound. On SIGTERM it drains: every
connection gets GOAWAY, streams in flight finish (up to --grace-s), then it
prints `COUNTERS <json>` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import cast

from tulle.codec.http2 import PrefaceMatch, match_preface
from tulle.core.discovery import Address, parse_address
from tulle.proxy.http2 import H2Service, StaticDispatcher

# Detection reads at most this much before deciding, as the proxy's detector does.
_DETECT_LIMIT = 64 << 10


class DetectingProtocol(asyncio.Protocol):
    """Reads the first bytes; on the HTTP/2 preface, hands over to H2ServerProtocol."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        match = match_preface(self.buffer)
        if match is PrefaceMatch.PARTIAL and len(self.buffer) < _DETECT_LIMIT:
            return
        if match is PrefaceMatch.NO or match is PrefaceMatch.PARTIAL:
            self.transport.close()
            return
        protocol = self.harness.service.protocol(initial_data=self.buffer)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)


class Harness:
    def __init__(self, routes: dict[str, list[Address]], timeout_s: float | None) -> None:
        self.service = H2Service(StaticDispatcher(routes, timeout_s=timeout_s))
        self.counters = self.service.counters


def parse_routes(specs: list[str]) -> dict[str, list[Address]]:
    routes: dict[str, list[Address]] = {}
    for spec in specs:
        name, _, addresses = spec.partition("=")
        routes[name.strip().lower()] = [parse_address(a) for a in addresses.split(",") if a.strip()]
    return routes


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    harness = Harness(parse_routes(args.route), args.timeout_s)
    server = await loop.create_server(lambda: DetectingProtocol(harness), "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    await harness.service.drain(args.grace_s)
    print(f"COUNTERS {json.dumps(harness.counters.snapshot())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument(
        "--route", action="append", default=[], help="AUTHORITY=HOST:PORT[,HOST:PORT...]"
    )
    parser.add_argument("--timeout-s", type=float, default=None, help="route timeout")
    parser.add_argument("--grace-s", type=float, default=10.0, help="drain grace period")
    parser.add_argument("--asyncio", action="store_true", help="plain asyncio, not uvloop")
    parser.add_argument("--profile", default=None, help="write cProfile stats here on exit")
    args = parser.parse_args()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        if args.asyncio:
            asyncio.run(serve(args))
        else:
            import uvloop

            uvloop.run(serve(args))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
