"""Consistent hashing with bounded loads: stable keys, even shares, minimal moves, load caps."""

from __future__ import annotations

from collections import Counter

from tulle.core.affinity import HashRing, cookie_value, request_key
from tulle.core.discovery import AffinitySpec

NAMES = [f"10.0.0.{i}:8080" for i in range(1, 6)]


def ring(names: list[str]) -> HashRing[str]:
    return HashRing([(name, 10_000, name) for name in names])


def idle(_: str) -> int:
    return 0


def up(_: str) -> bool:
    return True


def owners(r: HashRing[str], keys: list[bytes]) -> dict[bytes, str | None]:
    return {key: r.pick(key, idle, up, 1.25) for key in keys}


KEYS = [b"user-%d" % i for i in range(10_000)]


def test_a_key_always_gets_the_same_endpoint() -> None:
    first = owners(ring(NAMES), KEYS[:1000])
    assert owners(ring(list(reversed(NAMES))), KEYS[:1000]) == first


def test_shares_are_close_to_even() -> None:
    counts = Counter(owners(ring(NAMES), KEYS).values())
    # 160 points per endpoint: each share within 25 % of the mean (2,000).
    assert all(1500 <= n <= 2500 for n in counts.values()), counts


def test_an_endpoint_leaving_moves_only_its_own_keys() -> None:
    before = owners(ring(NAMES), KEYS)
    after = owners(ring(NAMES[:-1]), KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == NAMES[-1] for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == NAMES[-1])


def test_an_endpoint_joining_takes_only_keys_for_itself() -> None:
    before = owners(ring(NAMES[:-1]), KEYS)
    after = owners(ring(NAMES), KEYS)
    assert all(after[k] == NAMES[-1] for k in KEYS if before[k] != after[k])


def test_bounded_load_passes_over_a_full_endpoint_to_the_next() -> None:
    r = ring(NAMES)
    key = b"hot"
    home = r.pick(key, idle, up, 1.25)
    loads = dict.fromkeys(NAMES, 0)
    picked: Counter[str | None] = Counter()
    for _ in range(100):  # a hot key, every request still in flight
        chosen = r.pick(key, loads.__getitem__, up, 1.25)
        assert chosen is not None
        loads[chosen] += 1
        picked[chosen] += 1
    # The home endpoint took its capped share; none took more than
    # ceil(1.25 * 100 / 5) = 25; the rest spilled clockwise to other endpoints.
    assert picked[home] == 25
    assert max(loads.values()) <= 25
    assert len(picked) >= 4


def test_unavailable_endpoints_are_passed_over() -> None:
    r = ring(NAMES)
    home = r.pick(b"k", idle, up, 1.25)
    other = r.pick(b"k", idle, lambda n: n != home, 1.25)
    assert other is not None and other != home
    assert r.pick(b"k", idle, lambda n: False, 1.25) is None


def test_weights_give_more_points() -> None:
    heavy = HashRing([(n, 30_000 if n == NAMES[0] else 10_000, n) for n in NAMES])
    counts = Counter(heavy.pick(k, idle, up, 100.0) for k in KEYS)
    assert counts[NAMES[0]] > 2 * max(c for n, c in counts.items() if n != NAMES[0])


def test_request_key_from_header_or_cookie() -> None:
    headers = {b"x-user": b"alice", b"cookie": b'a=1; session="s-42"; b=2'}
    assert request_key(AffinitySpec(header="x-user"), headers.get) == b"alice"
    assert request_key(AffinitySpec(cookie="session"), headers.get) == b"s-42"
    assert request_key(AffinitySpec(cookie="missing"), headers.get) is None
    assert cookie_value(None, b"a") is None
    assert cookie_value(b"a=", b"a") is None
