"""Control-plane scale: one `tulle control`, many Get streams, manifest changes timed.

Starts one control-plane process serving a manifest of `--services` services,
then `--clients` client processes that together hold `--streams` Destination.Get
streams (stream i watches service i % services), `--streams-per-channel` streams
per HTTP/2 connection (default 10: a proxy watching 10 services). Once every
stream has its snapshot, the manifest is rewritten `--changes` times; every
change moves every service to a new endpoint, so every stream must receive it.

For each change it reports the time from the file write to the *last* stream
receiving the change (p50/p99 over the changes), the same over every single
delivery, and the control plane's CPU (from /proc/<pid>/stat) and RSS (VmRSS).
The delay includes the manifest poll interval (200 ms by default).

    python bench/control_scale.py                      # 1,000 streams, 100 services
    python bench/control_scale.py --streams 200 --changes 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

CHANGE_PORT_BASE = 20_000
READY_TIMEOUT_S = 60.0


# -- the client side (runs in child processes) ----------------------------------


async def client_main(port: int, first: int, count: int, services: int, per_channel: int) -> None:
    import grpc

    from tulle.api.proto import destination_pb2 as pb
    from tulle.api.proto import destination_pb2_grpc as pb_grpc

    # A local subchannel pool gives every channel its own TCP connection, as
    # separate proxies would have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        for _ in range((count + per_channel - 1) // per_channel)
    ]
    # received[change] = wall-clock times at which streams saw that change
    received: dict[int, list[float]] = {}
    snapshots = 0
    all_ready = asyncio.Event()

    async def follow(index: int, channel: grpc.aio.Channel) -> None:
        nonlocal snapshots
        stub = pb_grpc.DestinationStub(channel)
        request = pb.GetDestination(path=f"svc-{index % services}", context_token=f"bench-{index}")
        async for update in stub.Get(request):
            now = time.time()
            if update.snapshot:
                snapshots += 1
                if snapshots == count:
                    all_ready.set()
                continue
            if update.WhichOneof("update") == "add":
                for endpoint in update.add.addrs:
                    if endpoint.addr.port >= CHANGE_PORT_BASE:
                        change = endpoint.addr.port - CHANGE_PORT_BASE
                        received.setdefault(change, []).append(now)

    tasks = [
        asyncio.create_task(follow(first + i, channels[i // per_channel])) for i in range(count)
    ]
    await asyncio.wait_for(all_ready.wait(), READY_TIMEOUT_S)
    print("ready", flush=True)
    # The parent writes one line when it is done changing the manifest.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(received), flush=True)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close(None)


# -- the parent side ------------------------------------------------------------


def manifest_text(services: int, change: int) -> str:
    lines = ["services:"]
    for i in range(services):
        endpoints = [f"127.0.0.1:{10_000 + i}", f"127.0.0.1:{11_000 + i}"]
        if change > 0:
            endpoints.append(f"127.0.0.1:{CHANGE_PORT_BASE + change}")
        lines += [
            f"  - name: svc-{i}",
            "    port: 8080",
            f"    endpoints: [{', '.join(endpoints)}]",
            "    routes:",
            "      - name: get",
            "        matches: [{path: {value: /}, method: GET}]",
            "        timeout: 1s",
        ]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def read_line(stream: IO[str], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line:
            return line
        time.sleep(0.01)
    raise TimeoutError(f"no {what} within {timeout} s")


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def run_bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tulle-bench-control-"))
    manifest = workdir / "mesh.yaml"
    manifest.write_text(manifest_text(args.services, 0))
    control = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tulle",
            "control",
            "--manifest",
            str(manifest),
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    clients: list[subprocess.Popen[str]] = []
    try:
        assert control.stdout is not None
        ready = read_line(control.stdout, READY_TIMEOUT_S, "ready line from tulle control")
        match = re.search(r"grpc=[\d.]+:(\d+)", ready)
        if match is None:
            raise RuntimeError(f"unexpected output from tulle control: {ready!r}")
        port = int(match.group(1))
        rss_idle = rss_mib(control.pid)

        per_client = (args.streams + args.clients - 1) // args.clients
        started = time.monotonic()
        for c in range(args.clients):
            first = c * per_client
            count = min(per_client, args.streams - first)
            clients.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        f"{port},{first},{count},{args.services},{args.streams_per_channel}",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for client in clients:
            assert client.stdout is not None
            line = read_line(client.stdout, READY_TIMEOUT_S, "ready line from a client")
            if line.strip() != "ready":
                raise RuntimeError(f"client said {line!r}")
        subscribe_s = time.monotonic() - started
        time.sleep(1.0)

        cpu_before_idle = cpu_seconds(control.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(control.pid) - cpu_before_idle) / args.idle_seconds
        rss_streams = rss_mib(control.pid)

        written: dict[int, float] = {}
        cpu_before = cpu_seconds(control.pid)
        for change in range(1, args.changes + 1):
            written[change] = time.time()
            write_atomically(manifest, manifest_text(args.services, change))
            time.sleep(args.interval)
        cpu_changes = cpu_seconds(control.pid) - cpu_before
        rss_after = rss_mib(control.pid)

        received: dict[int, list[float]] = {}
        for client in clients:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write("dump\n")
            client.stdin.flush()
            for key, times in json.loads(
                read_line(client.stdout, 30.0, "results from a client")
            ).items():
                received.setdefault(int(key), []).extend(times)
    finally:
        for client in clients:
            client.kill()
            client.wait()
        control.terminate()
        try:
            control.wait(5)
        except subprocess.TimeoutExpired:
            control.kill()
            control.wait()

    last: list[float] = []
    every: list[float] = []
    missing = 0
    for change, at in written.items():
        times = received.get(change, [])
        missing += args.streams - len(times)
        if times:
            last.append(max(times) - at)
            every.extend(t - at for t in times)
    print(f"control plane scale: {args.streams} Get streams over {args.services} services")
    print(
        f"  {args.clients} client processes, {args.streams_per_channel} streams per connection, "
        f"{args.changes} manifest changes {args.interval:g} s apart"
    )
    print(f"  all streams subscribed (snapshots received) in {subscribe_s:.2f} s")
    if last:
        print(
            "  change -> last stream:  "
            f"p50 {percentile(last, 0.5) * 1000:.0f} ms  p99 {percentile(last, 0.99) * 1000:.0f} ms"
            f"  max {max(last) * 1000:.0f} ms"
        )
        print(
            "  change -> each stream:  "
            f"p50 {percentile(every, 0.5) * 1000:.0f} ms  "
            f"p99 {percentile(every, 0.99) * 1000:.0f} ms"
        )
    print(f"  deliveries missing: {missing}")
    print(
        f"  control CPU: {cpu_changes / args.changes * 1000:.0f} ms per change "
        f"(of one core), {idle_cpu * 100:.1f} % of a core idle with all streams open"
    )
    print(
        f"  control RSS: {rss_idle:.0f} MiB at start, {rss_streams:.0f} MiB with the streams, "
        f"{rss_after:.0f} MiB after the changes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="Get streams in total.")
    parser.add_argument("--services", type=int, default=100, help="Services in the manifest.")
    parser.add_argument("--clients", type=int, default=2, help="Client processes.")
    parser.add_argument(
        "--streams-per-channel", type=int, default=10, help="Streams per client connection."
    )
    parser.add_argument("--changes", type=int, default=10, help="Manifest changes to time.")
    parser.add_argument("--interval", type=float, default=1.5, help="Seconds between changes.")
    parser.add_argument(
        "--idle-seconds", type=float, default=2.0, help="Seconds to measure idle CPU over."
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, first, count, services, per_channel = (int(x) for x in args.client.split(","))
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(client_main(port, first, count, services, per_channel))
        return
    run_bench(args)


if __name__ == "__main__":
    main()
