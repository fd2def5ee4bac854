"""`loadgen`: a steady trickle of shop traffic through the mesh, so numbers move.

Sends `--rps` requests a second to `http://web/...` through its sidecar (40 %
`/`, 40 % `/product/<id>`, 20 % `POST /checkout`), prints a one-line summary
every `--report` seconds, and serves its own counters as JSON on `GET /` of
its port (which is also how `tulle up` sees that it is running).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from concurrent import futures

from tulle.demo.shop.common import (
    JsonHandler,
    MeshCallError,
    call_json,
    fetch,
    log,
    parse_args,
    serve_http,
)

TARGET = "web"
# Requests in flight at most: a slow mesh lowers the rate instead of piling up threads.
MAX_IN_FLIGHT = 8


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.in_flight = 0

    def record(self, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.in_flight -= 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.statuses)


def one_request(rng: random.Random, stats: Stats) -> None:
    pick = rng.random()
    try:
        if pick < 0.4:
            fetch("GET", f"http://{TARGET}/")
        elif pick < 0.8:
            call_json("GET", f"http://{TARGET}/product/{rng.randrange(1, 7)}", None)
        else:
            call_json("POST", f"http://{TARGET}/checkout", {})
        stats.record("200")
    except MeshCallError as exc:
        stats.record(str(exc.status) if exc.status else "error")


def wait_for_target(stop: threading.Event, timeout_s: float = 60.0) -> None:
    """Wait until web answers through the mesh, so start-up is not counted as failures."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            fetch("GET", f"http://{TARGET}/healthz", timeout_s=1.0)
            return
        except MeshCallError:
            stop.wait(0.5)
    log(f"{TARGET} is not answering yet; sending traffic anyway")


def generate(rps: float, report_s: float, stats: Stats, stop: threading.Event) -> None:
    wait_for_target(stop)
    rng = random.Random()
    interval = 1.0 / rps
    next_at = time.monotonic()
    last_report = time.monotonic()
    reported: dict[str, int] = {}
    with futures.ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
        while not stop.is_set():
            now = time.monotonic()
            if now < next_at:
                stop.wait(next_at - now)
                continue
            next_at = max(next_at + interval, now - 1.0)
            with stats.lock:
                busy = stats.in_flight >= MAX_IN_FLIGHT
                if not busy:
                    stats.in_flight += 1
            if busy:
                with stats.lock:
                    stats.statuses["skipped"] += 1
                continue
            pool.submit(one_request, rng, stats)
            if now - last_report >= report_s:
                current = stats.snapshot()
                delta = {k: v - reported.get(k, 0) for k, v in current.items()}
                total = sum(v for k, v in delta.items() if k != "skipped")
                ok = delta.get("200", 0)
                share = f"{ok / total:.0%}" if total else "-"
                log(
                    f"{total / (now - last_report):.1f} req/s, {share} ok "
                    f"({', '.join(f'{k}: {v}' for k, v in sorted(delta.items()))})"
                )
                reported, last_report = current, now


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        "The demo shop's traffic generator.",
        argv,
        rps=(float, 10.0, "requests per second to web"),
        report=(float, 10.0, "seconds between summary lines"),
    )
    if args.rps <= 0:
        print("loadgen: --rps must be above 0", file=sys.stderr)
        return 2
    stats = Stats()
    stop = threading.Event()
    worker = threading.Thread(
        target=generate, args=(args.rps, args.report, stats, stop), daemon=True
    )
    worker.start()

    class StatsHandler(JsonHandler):
        def do_GET(self) -> None:
            self.send_json(200, {"target": TARGET, "rps": args.rps, "statuses": stats.snapshot()})

    try:
        if args.port:
            serve_http(StatsHandler, args.port, f"loadgen at {args.rps:g} req/s to {TARGET}")
        else:
            log(f"loadgen at {args.rps:g} req/s to {TARGET}")
            worker.join()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
