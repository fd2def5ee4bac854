"""End-user JWT on the inbound: signing keys kept loaded, and one request's token checked.

A port whose policy requires a `jwt` authentication (docs/policy.md) has
`InboundPolicy.jwt_checks`; for its requests the plan asks `InboundJwt.check`,
which reads `Authorization: Bearer`, verifies the token against each
authentication's keys (`tulle.core.jwt.verify`) and says which authentications
it satisfies and which claim headers go to the app. A port without one never
gets here (one attribute test).

Keys are never fetched on the request path. Each JWKS source (a file or a URL)
is a `JwksSource` with a background task: a file is re-read when its size or
mtime changes; a URL is fetched, cached, refetched every `URL_REFRESH_S` and,
after a failure, retried with exponential backoff while the last good keys
stay in use. A request that arrives while a source has no keys yet gets 401
at once, never waits.

Counted in `inbound_jwt_total{result}`: `valid`, `invalid`, `missing`, `no-keys`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from tulle.core.jwt import JwksError, Verified, bearer_token, claim_header_value, parse_jwks, verify

if TYPE_CHECKING:
    from joserfc.jwk import KeySet

    from tulle.core.policy import InboundPolicy
    from tulle.proxy.metrics import Metrics

log = logging.getLogger(__name__)

FILE_POLL_S: Final = 1.0
URL_REFRESH_S: Final = 300.0
URL_TIMEOUT_S: Final = 5.0
BACKOFF_MIN_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
MAX_JWKS_BYTES: Final = 1 << 20
# Sources one proxy keeps (a task each); past it, a new one has no keys (401).
MAX_SOURCES: Final = 32

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class JwtOutcome:
    """What one request's token means for the policy decision and the upstream request."""

    mask: int  # the jwt_checks bits the token satisfies
    # None: the token is valid for some authentication, or there is none.
    error: str | None
    missing: bool
    # Dropped from the request (every caller copy), then `add` appended.
    strip: tuple[bytes, ...]
    add: tuple[Header, ...]


class JwksSource:
    """The keys of one JWKS file or URL, kept current by a background task."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.is_url = location.startswith(("http://", "https://"))
        self.keys: KeySet | None = None
        self.loads = 0
        self.failures = 0
        self._stamp: tuple[int, int] | None = None
        self._last_error = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if not self.is_url:
            # A file is read at once: the first request need not find it empty.
            self.reload_file()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reload_file(self) -> None:
        """Read the file again if it changed; a bad file keeps the last good keys."""
        try:
            st = os.stat(self.location)
        except OSError as exc:
            self._failed(f"cannot read: {exc.strerror}")
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            with open(self.location, "rb") as f:
                data = f.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            self._failed(f"cannot read: {exc.strerror}")
            return
        self._load(data)

    def _load(self, data: bytes) -> bool:
        if len(data) > MAX_JWKS_BYTES:
            self._failed("larger than 1 MiB")
            return False
        try:
            self.keys = parse_jwks(data)
        except JwksError as exc:
            self._failed(str(exc))
            return False
        self.loads += 1
        self._last_error = ""
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        if why == self._last_error:
            return  # said once: a missing file is polled every second
        self._last_error = why
        log.warning(
            "JWKS %s: %s (%s)",
            self.location,
            why,
            "keeping the last good keys" if self.keys is not None else "no keys: tokens get 401",
        )

    async def _run(self) -> None:
        if not self.is_url:
            while True:
                await asyncio.sleep(FILE_POLL_S)
                self.reload_file()
        backoff = BACKOFF_MIN_S
        async with httpx.AsyncClient(timeout=URL_TIMEOUT_S, follow_redirects=False) as client:
            while True:
                if await self._fetch(client):
                    backoff = BACKOFF_MIN_S
                    await asyncio.sleep(URL_REFRESH_S)
                else:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _fetch(self, client: httpx.AsyncClient) -> bool:
        try:
            response = await client.get(self.location)
        except httpx.HTTPError as exc:
            self._failed(f"fetch failed: {type(exc).__name__}")
            return False
        if response.status_code != 200:
            self._failed(f"fetch answered {response.status_code}")
            return False
        return self._load(response.content)


class InboundJwt:
    """The JWKS sources of one proxy worker, and the per-request check."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self.sources: dict[str, JwksSource] = {}
        self._labels = {r: (("result", r),) for r in ("valid", "invalid", "missing", "no-keys")}

    def prepare(self, policy: InboundPolicy) -> None:
        """Start loading the keys a policy needs (from the policy watcher, off
        the request path; `source` also does it on first use)."""
        for _, spec in policy.jwt_checks:
            self.source(spec.jwks_source)

    def source(self, location: str) -> JwksSource | None:
        source = self.sources.get(location)
        if source is None and location and len(self.sources) < MAX_SOURCES:
            source = self.sources[location] = JwksSource(location)
            source.start()
        return source

    async def close(self) -> None:
        for source in self.sources.values():
            await source.close()

    def check(self, policy: InboundPolicy, header: Callable[[bytes], bytes | None]) -> JwtOutcome:
        token = bearer_token(header(b"authorization"))
        strip = policy.jwt_headers
        if token is None:
            self._count("missing")
            return JwtOutcome(0, None, True, strip, ())
        now = self._clock()
        mask = 0
        error: str | None = None
        add: list[Header] = []
        for bit, spec in policy.jwt_checks:
            source = self.source(spec.jwks_source)
            keys = source.keys if source is not None else None
            if keys is None:
                error = error or "signing keys not loaded"
                continue
            result = verify(token, keys, spec, now)
            if isinstance(result, Verified):
                mask |= bit
                for claim, name in spec.forward_claims:
                    value = claim_header_value(result.claims.get(claim))
                    if value is not None:
                        add.append((name.lower().encode(), value))
            elif error is None:
                error = result
        if mask:
            self._count("valid")
            return JwtOutcome(mask, None, False, strip, tuple(add))
        self._count("no-keys" if error == "signing keys not loaded" else "invalid")
        return JwtOutcome(0, error or "invalid token", False, strip, ())

    def _count(self, result: str) -> None:
        self._metrics.inc("inbound_jwt_total", self._labels[result])
