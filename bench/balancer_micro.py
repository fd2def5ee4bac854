"""Micro-benchmark of the balancer's per-request cost: pick() + on_start() + on_end().

Run: ``python bench/balancer_micro.py [--requests N]``. Prints
nanoseconds per request for a few endpoint counts, and for the retry budget and
the weighted split, so that a change to the hot path can be measured before and
after. No sockets, no processes; one core for about a second.
"""

from __future__ import annotations

import argparse
import random
import time

from tulle.core.discovery import Endpoint
from tulle.core.outcome import SUCCESS
from tulle.core.retry_budget import RetryBudget
from tulle.core.split import WeightedPicker
from tulle.proxy.balance import Balancer


def per_request_ns(endpoint_count: int, requests: int) -> float:
    balancer = Balancer(rng=random.Random(1))
    balancer.set_endpoints(Endpoint(("10.0.0.1", 8000 + i)) for i in range(endpoint_count))
    clock = 1000.0
    started = time.perf_counter_ns()
    for _ in range(requests):
        clock += 0.0001
        state = balancer.pick(clock)
        if state is None:
            raise SystemExit("balancer returned no endpoint")
        state.on_start()
        state.on_end(clock, 0.002, SUCCESS)
    return (time.perf_counter_ns() - started) / requests


def budget_ns(requests: int) -> float:
    budget = RetryBudget()
    clock = 1000.0
    started = time.perf_counter_ns()
    for _ in range(requests):
        clock += 0.0001
        budget.deposit(clock)
        budget.try_withdraw(clock)
    return (time.perf_counter_ns() - started) / requests


def split_ns(requests: int) -> float:
    picker = WeightedPicker([("a", 90), ("b", 10)], random.Random(1))
    started = time.perf_counter_ns()
    for _ in range(requests):
        picker.pick()
    return (time.perf_counter_ns() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="requests per measurement")
    args = parser.parse_args()
    started = time.perf_counter_ns()
    clock = 0.0
    for _ in range(args.requests):
        clock += 0.0001
    loop_ns = (time.perf_counter_ns() - started) / args.requests
    print(f"empty loop overhead: {loop_ns:.0f} ns/iteration (included below)")
    for count in (1, 3, 10, 100):
        ns = min(per_request_ns(count, args.requests) for _ in range(3))
        print(f"balancer, {count:>3} endpoints: {ns:.0f} ns per pick+on_start+on_end")
    budget = min(budget_ns(args.requests) for _ in range(3))
    print(f"retry budget deposit+try_withdraw: {budget:.0f} ns")
    print(f"weighted split pick: {min(split_ns(args.requests) for _ in range(3)):.0f} ns")


if __name__ == "__main__":
    main()
