"""Balancer: P2C over peak-EWMA cost, endpoint churn, ejection, probes, and a latency simulation."""

from __future__ import annotations

import heapq
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.core.backoff import BackoffSpec
from tulle.core.discovery import Endpoint
from tulle.core.failure_accrual import FailureAccrual
from tulle.core.outcome import CANCELLED, FAILURE, SUCCESS
from tulle.proxy.balance import Balancer, EndpointState, ejected_detail


def endpoints(*ports: int, weight: int = 10_000) -> list[Endpoint]:
    return [Endpoint(("10.0.0.1", port), weight=weight) for port in ports]


def no_jitter_accrual() -> FailureAccrual:
    return FailureAccrual(max_failures=2, backoff=BackoffSpec(1.0, 60.0, jitter=0.0))


def eject(state: EndpointState, now: float) -> None:
    for _ in range(state.accrual.max_failures):
        state.on_start()
        state.on_end(now, 0.001, FAILURE)
    assert state.accrual.state == "open"


def test_no_endpoints_gives_none() -> None:
    balancer = Balancer()
    assert balancer.pick(0.0) is None
    assert len(balancer) == 0


def test_a_single_endpoint_is_returned_until_ejected() -> None:
    balancer = Balancer(accrual_factory=no_jitter_accrual)
    balancer.set_endpoints(endpoints(1))
    only = balancer.pick(0.0)
    assert only is not None
    assert only.endpoint.address == ("10.0.0.1", 1)
    eject(only, 0.0)
    assert balancer.pick(0.5) is None


def test_two_endpoints_always_give_the_cheaper() -> None:
    balancer = Balancer(rng=random.Random(1))
    balancer.set_endpoints(endpoints(1, 2))
    fast, slow = balancer.states()
    fast.on_start()
    fast.on_end(0.0, 0.001, SUCCESS)
    slow.on_start()
    slow.on_end(0.0, 0.1, SUCCESS)
    assert all(balancer.pick(0.1) is fast for _ in range(50))


def test_pending_requests_raise_the_cost() -> None:
    balancer = Balancer(rng=random.Random(1))
    balancer.set_endpoints(endpoints(1, 2))
    busy, idle = balancer.states()
    busy.on_start()
    assert busy.cost(0.0) == 2 * idle.cost(0.0)
    assert all(balancer.pick(0.0) is idle for _ in range(20))


def test_weight_biases_the_share() -> None:
    balancer = Balancer(rng=random.Random(5))
    balancer.set_endpoints(
        [Endpoint(("10.0.0.1", 1), weight=30_000), Endpoint(("10.0.0.1", 2), weight=10_000)]
    )
    counts: Counter[int] = Counter()
    for _ in range(400):
        state = balancer.pick(0.0)
        assert state is not None
        state.on_start()  # never ended: pending grows, so weights decide the ratio
        counts[state.endpoint.address[1]] += 1
    assert 0.70 <= counts[1] / 400 <= 0.80


def test_weight_zero_is_a_last_resort_not_forbidden() -> None:
    balancer = Balancer(rng=random.Random(2))
    balancer.set_endpoints([Endpoint(("10.0.0.1", 1), weight=0)])
    assert balancer.pick(0.0) is not None


def test_set_endpoints_keeps_state_replaces_metadata_and_reports_removals() -> None:
    removed: list[EndpointState] = []
    balancer = Balancer(on_removed=removed.append)
    balancer.set_endpoints(endpoints(1, 2, 3))
    one, two, three = balancer.states()
    two.on_start()
    two.pool = "the proxy's pool"
    balancer.set_endpoints([Endpoint(("10.0.0.1", 2), weight=5_000, identity="b"), *endpoints(4)])
    assert len(balancer) == 2
    kept = balancer.get(("10.0.0.1", 2))
    assert kept is two
    assert kept.pending == 1
    assert kept.pool == "the proxy's pool"
    assert kept.endpoint.identity == "b"
    assert kept.cost(0.0) == 2 * 2 * kept.ewma.estimate(0.0)
    assert sorted(s.endpoint.address[1] for s in removed) == [1, 3]
    assert one.removed and three.removed and not two.removed
    assert not one.available(0.0)
    # An in-flight request on a removed endpoint still finishes cleanly.
    one.on_start()
    one.on_end(0.1, 0.01, SUCCESS)
    assert one.pending == 0
    # Coming back is a fresh endpoint, not the removed state.
    balancer.set_endpoints(endpoints(1, 2))
    assert balancer.get(("10.0.0.1", 1)) is not one


def test_ejected_endpoints_are_skipped_and_all_ejected_gives_none() -> None:
    balancer = Balancer(accrual_factory=no_jitter_accrual, rng=random.Random(3))
    balancer.set_endpoints(endpoints(1, 2, 3))
    first, second, third = balancer.states()
    eject(first, 0.0)
    picked = {balancer.pick(0.1) for _ in range(100)}
    assert picked == {second, third}
    eject(second, 0.0)
    assert all(balancer.pick(0.1) is third for _ in range(20))
    assert balancer.breaker_counts() == {"closed": 1, "open": 2, "half-open": 0}
    eject(third, 0.0)
    assert balancer.pick(0.2) is None


def test_half_open_endpoint_gets_one_probe_then_closes() -> None:
    balancer = Balancer(accrual_factory=no_jitter_accrual, rng=random.Random(4))
    balancer.set_endpoints(endpoints(1, 2))
    flaky, healthy = balancer.states()
    eject(flaky, 0.0)
    eject(healthy, 0.0)
    healthy.on_start()  # a request that was in flight when it was ejected
    assert balancer.pick(0.5) is None
    # After the 1 s backoff both are half-open; each takes one probe.
    probe = balancer.pick(1.0)
    assert probe is not None
    probe.on_start()
    other = balancer.pick(1.0)
    assert other is not None and other is not probe
    other.on_start()
    assert balancer.pick(1.0) is None
    assert balancer.breaker_counts() == {"closed": 0, "open": 0, "half-open": 2}
    probe.on_end(1.1, 0.01, SUCCESS)
    assert probe.accrual.state == "closed"
    other.on_end(1.1, 0.01, FAILURE)
    assert other.accrual.state == "open"
    assert other.accrual.retry_at == 1.1 + 2.0  # the second backoff is longer
    assert all(balancer.pick(1.2) is probe for _ in range(20))


def test_a_cancelled_probe_lets_another_probe_go_and_counts_nothing() -> None:
    balancer = Balancer(accrual_factory=no_jitter_accrual)
    balancer.set_endpoints(endpoints(1))
    (state,) = balancer.states()
    eject(state, 0.0)
    probe = balancer.pick(1.0)
    assert probe is state
    probe.on_start()
    assert balancer.pick(1.0) is None
    estimate = state.ewma.estimate(1.0)
    probe.on_end(1.5, 0.5, CANCELLED)
    assert state.pending == 0
    assert state.accrual.state == "half-open"
    assert state.ewma.estimate(1.0) == estimate
    assert balancer.pick(1.0) is state


def test_cancellations_neither_eject_nor_end_a_failure_run() -> None:
    """However many clients give up, the endpoint's record is what it was."""
    balancer = Balancer(accrual_factory=lambda: FailureAccrual(max_failures=3))
    balancer.set_endpoints(endpoints(1))
    (state,) = balancer.states()
    state.on_start()
    state.on_end(0.0, 0.02, SUCCESS)
    state.on_start()
    state.on_end(0.1, 0.01, FAILURE)
    estimate = state.ewma.estimate(0.1)
    for i in range(20):
        state.on_start()
        state.on_end(0.1, 5.0 + i, CANCELLED)
    assert state.pending == 0
    assert state.accrual.state == "closed"
    assert state.accrual.consecutive_failures == 1
    # A cancellation after a long wait is the client's patience, not latency.
    assert state.ewma.estimate(0.1) == estimate
    for _ in range(2):
        state.on_start()
        state.on_end(0.2, 0.01, FAILURE)
    assert state.accrual.state == "open"


def test_ejected_detail_says_how_many_and_why() -> None:
    assert ejected_detail("books", 1) == (
        "the only endpoint of 'books' is ejected by failure accrual"
    )
    assert ejected_detail("books", 3) == "all 3 endpoints of 'books' are ejected by failure accrual"


def test_a_fast_failure_does_not_make_an_endpoint_look_cheap() -> None:
    balancer = Balancer()
    balancer.set_endpoints(endpoints(1))
    (state,) = balancer.states()
    state.on_start()
    state.on_end(0.0, 0.05, SUCCESS)
    state.on_start()
    state.on_end(0.0, 0.0001, FAILURE)
    assert state.ewma.estimate(0.0) == 0.05
    state.on_start()
    state.on_end(0.0, 2.0, FAILURE)  # a slow failure (a timeout) is a real peak
    assert state.ewma.estimate(0.0) == 2.0


def test_pending_never_goes_negative_on_an_unmatched_end() -> None:
    balancer = Balancer()
    balancer.set_endpoints(endpoints(1))
    (state,) = balancer.states()
    state.on_end(0.0, 0.01, SUCCESS)
    assert state.pending == 0


OUTCOMES = {"success": SUCCESS, "failure": FAILURE, "cancel": CANCELLED}

operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.frozensets(st.integers(1, 6), max_size=6)),
        st.tuples(st.just("pick"), st.floats(0.0, 0.5)),
        st.tuples(
            st.just("end"),
            st.integers(0, 50),
            st.sampled_from(["success", "failure", "cancel"]),
            st.floats(0.0, 0.3),
        ),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(0, 2**32))
def test_never_returns_an_unavailable_endpoint(ops: list[tuple[object, ...]], seed: int) -> None:
    balancer = Balancer(
        accrual_factory=lambda: FailureAccrual(max_failures=2, backoff=BackoffSpec(0.2, 1.0)),
        rng=random.Random(seed),
    )
    now = 0.0
    in_flight: list[EndpointState] = []
    probing: set[int] = set()  # id() of endpoints whose one probe is out
    known: set[int] = set()
    for op in ops:
        if op[0] == "set":
            ports = op[1]
            assert isinstance(ports, frozenset)
            balancer.set_endpoints(endpoints(*sorted(ports)))
            known = set(ports)
        elif op[0] == "pick":
            step = op[1]
            assert isinstance(step, float)
            now += step
            state = balancer.pick(now)
            if state is None:
                assert all(not s.available(now) for s in balancer.states())
                continue
            assert not state.removed
            assert state.endpoint.address[1] in known
            assert state.accrual.state != "open"
            if state.accrual.state == "half-open":
                assert id(state) not in probing
                probing.add(id(state))
            state.on_start()
            in_flight.append(state)
        elif in_flight:
            index, outcome, rtt = op[1], op[2], op[3]
            assert isinstance(index, int) and isinstance(rtt, float)
            now += rtt
            state = in_flight.pop(index % len(in_flight))
            state.on_end(now, rtt, OUTCOMES[outcome])
            # Any result or cancel ends the half-open trial (taken as the probe's).
            probing.discard(id(state))
        for state in (*balancer.states(), *in_flight):
            assert state.pending >= 0
        assert len(balancer) == len(known)


def simulate(
    latencies: dict[int, float],
    seconds: float,
    rate_per_s: float,
    seed: int,
    change_at: tuple[float, dict[int, float]] | None = None,
) -> list[tuple[float, int]]:
    """Open-loop Poisson arrivals on a fake clock; returns (time, port) per pick."""
    rng = random.Random(seed)
    balancer = Balancer(rng=random.Random(seed + 1))
    balancer.set_endpoints(endpoints(*latencies))
    completions: list[tuple[float, int, EndpointState, float]] = []
    picks: list[tuple[float, int]] = []
    now = 0.0
    current = dict(latencies)
    for sequence in range(int(seconds * rate_per_s * 2)):  # bounded; ends by time below
        now += rng.expovariate(rate_per_s)
        if now >= seconds:
            break
        if change_at is not None and now >= change_at[0]:
            current = change_at[1]
        while completions and completions[0][0] <= now:
            done_at, _, finished, finished_rtt = heapq.heappop(completions)
            finished.on_end(done_at, finished_rtt, SUCCESS)
        picked = balancer.pick(now)
        assert picked is not None
        picked.on_start()
        port = picked.endpoint.address[1]
        # +-20 % jitter around each endpoint's latency.
        rtt = current[port] * rng.uniform(0.8, 1.2)
        heapq.heappush(completions, (now + rtt, sequence, picked, rtt))
        picks.append((now, port))
    return picks


def share(picks: list[tuple[float, int]], port: int, start: float, end: float) -> float:
    window = [p for t, p in picks if start <= t < end]
    return sum(p == port for p in window) / len(window)


def test_a_ten_times_slower_endpoint_falls_below_ten_percent_within_five_seconds() -> None:
    picks = simulate({1: 0.010, 2: 0.010, 3: 0.100}, seconds=5.0, rate_per_s=300, seed=11)
    assert len(picks) > 1_000
    assert share(picks, 3, 4.0, 5.0) < 0.10
    assert share(picks, 3, 0.0, 5.0) < 0.10


def test_a_slow_endpoint_that_recovers_wins_traffic_back() -> None:
    picks = simulate(
        {1: 0.010, 2: 0.010, 3: 0.100},
        seconds=60.0,
        rate_per_s=100,
        seed=12,
        change_at=(5.0, {1: 0.010, 2: 0.010, 3: 0.010}),
    )
    assert share(picks, 3, 0.0, 5.0) < 0.10
    assert share(picks, 3, 50.0, 60.0) > 0.20


def test_a_retry_avoids_the_endpoint_that_just_failed() -> None:
    balancer = Balancer(rng=random.Random(7))
    balancer.set_endpoints(endpoints(1, 2, 3))
    failed = balancer.states()[0]
    # A fast-failing endpoint looks cheapest to P2C; a retry must still go elsewhere.
    for _ in range(3):
        failed.on_start()
        failed.on_end(0.0, 0.0001, False)
    picks = Counter(balancer.pick_avoiding(0.1, failed) for _ in range(300))
    assert failed not in picks
    assert set(picks) == set(balancer.states()[1:])


def test_a_retry_falls_back_to_the_failed_endpoint_when_it_is_the_only_one() -> None:
    balancer = Balancer(accrual_factory=no_jitter_accrual)
    balancer.set_endpoints(endpoints(1, 2))
    first, second = balancer.states()
    eject(second, 0.0)
    assert balancer.pick_avoiding(0.1, first) is first
    eject(first, 0.0)
    assert balancer.pick_avoiding(0.1, first) is None
