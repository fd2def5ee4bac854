"""Session affinity: consistent hashing with bounded loads, and the request's key.

Pure. `HashRing` places every endpoint at `VNODES` pseudo-random points of a
64-bit ring (more for heavier endpoints); a key goes to the first endpoint
clockwise of its own hash. An endpoint joining or leaving moves only the
keys of the arcs it takes or gives back (about 1/N of them).

Bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
Bounded Loads", 2018): an endpoint whose in-flight count has reached
`ceil(load_factor * (total + 1) / N)` is passed over, and the key goes on
clockwise to the next one, so one hot key cannot melt one endpoint while
keys keep their endpoint whenever it has room. Unavailable endpoints
(ejected by failure accrual) are passed over the same way.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tulle.core.discovery import AffinitySpec

T = TypeVar("T")

# Ring points per endpoint of the default weight: enough for shares within a
# few percent of even with a handful of endpoints.
VNODES = 160
DEFAULT_WEIGHT = 10_000

HeaderLookup = Callable[[bytes], bytes | None]


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing(Generic[T]):
    __slots__ = ("_hashes", "_items", "_owners")

    def __init__(self, items: Sequence[tuple[str, int, T]], vnodes: int = VNODES) -> None:
        """`items`: (stable name, weight, item); the name places the item on the ring."""
        self._items = [item for _, _, item in items]
        points: list[tuple[int, int]] = []
        for index, (name, weight, _) in enumerate(items):
            count = max(
                1, round(vnodes * (weight if weight > 0 else DEFAULT_WEIGHT) / DEFAULT_WEIGHT)
            )
            encoded = name.encode()
            points.extend((hash64(encoded + b"#%d" % i), index) for i in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [index for _, index in points]

    def __len__(self) -> int:
        return len(self._items)

    def pick(
        self,
        key: bytes,
        load: Callable[[T], int],
        available: Callable[[T], bool],
        load_factor: float,
    ) -> T | None:
        """The key's item: the first clockwise that is available and under the bound."""
        items = self._items
        count = len(items)
        if not count:
            return None
        total = 0
        for item in items:
            total += load(item)
        cap = math.ceil(load_factor * (total + 1) / count)
        hashes = self._hashes
        owners = self._owners
        size = len(hashes)
        start = bisect.bisect_left(hashes, hash64(key))
        seen: set[int] = set()
        for step in range(size):
            index = owners[(start + step) % size]
            if index in seen:
                continue
            seen.add(index)
            item = items[index]
            if available(item) and load(item) < cap:
                return item
            if len(seen) == count:
                break
        return None


def request_key(spec: AffinitySpec, header: HeaderLookup) -> bytes | None:
    """The affinity key of a request: its header's value, or its cookie's; None
    when the request carries none (it is then balanced as usual)."""
    if spec.header:
        return header(spec.header_bytes)
    if spec.cookie:
        return cookie_value(header(b"cookie"), spec.cookie_bytes)
    return None


def cookie_value(cookies: bytes | None, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header (RFC 6265 5.4 shape)."""
    if not cookies:
        return None
    for part in cookies.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"') or None
    return None
