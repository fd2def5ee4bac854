"""CertManager's timing: renew at 70 % of the lifetime, back off on failure (fake clock)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from tulle.core.backoff import BackoffSpec
from tulle.identity.authority import Certifier, IssuedCertificate
from tulle.identity.ca import TrustBundle, make_anchor
from tulle.identity.client import CertifyFailed, CertManager, NotReady, renewal_time
from tulle.identity.store import IssuerMaterial
from tulle.identity.tokens import make_token

WEB = "spiffe://cluster.local/ns/default/sa/web"
LEAF_TTL = 100.0


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.stop_after = 0
        self.stopped = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if len(self.sleeps) >= self.stop_after:
            self.stopped.set()
            await asyncio.Event().wait()  # park here until the manager is closed
        self.now += delay


class ScriptedSource:
    """Issues real leaves (at the fake clock's time) or fails, as scripted."""

    def __init__(
        self,
        material: IssuerMaterial,
        clock: FakeClock,
        failures: int = 0,
        failure: Exception | None = None,
    ) -> None:
        self.certifier = Certifier(lambda: material, leaf_ttl_s=LEAF_TTL)
        self.material = material
        self.clock = clock
        self.failures = failures
        self.failure = failure or CertifyFailed("control plane unreachable")
        self.calls = 0

    async def certify(self, identity: str, csr_der: bytes) -> IssuedCertificate:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise self.failure
        now = self.clock()
        token = make_token(self.material.token_secret, identity, now=now, ttl_s=60)
        return self.certifier.certify(identity, token, csr_der, now=now)

    async def watch_bundles(self, identity: str) -> AsyncIterator[TrustBundle]:
        await asyncio.Event().wait()
        yield self.material.bundle  # unreachable: this source never changes its bundle

    async def close(self) -> None:
        return None


def test_renewal_time() -> None:
    assert renewal_time(1000.0, 1100.0) == pytest.approx(1070.0)
    assert renewal_time(1000.0, 1100.0, 0.5) == pytest.approx(1050.0)
    assert renewal_time(1000.0, 900.0) == 1000.0


async def _run(manager: CertManager, clock: FakeClock, steps: int) -> None:
    clock.stop_after = steps
    await manager.start()
    await asyncio.wait_for(clock.stopped.wait(), 10)
    await manager.close()


def test_renews_at_seventy_percent() -> None:
    async def scenario() -> None:
        # Whole seconds: certificates have one-second resolution.
        clock = FakeClock(1_800_000_000.0)
        material = IssuerMaterial.generate("cluster.local", now=clock.now - 10)
        source = ScriptedSource(material, clock)
        manager = CertManager(WEB, source, watch_bundle=False, clock=clock, sleep=clock.sleep)
        with pytest.raises(NotReady):
            manager.server_context()
        await _run(manager, clock, steps=4)
        assert source.calls == 4
        assert clock.sleeps == [pytest.approx(0.7 * LEAF_TTL)] * 4
        assert manager.renewals == 4 and manager.failures == 0
        assert manager.ready
        assert manager.expiry == pytest.approx(clock.now + LEAF_TTL)
        assert 'identity_cert_refresh_total{result="ok"} 4' in manager.render_prometheus()

    asyncio.run(scenario())


def test_retries_with_jittered_backoff_then_renews() -> None:
    async def scenario() -> None:
        clock = FakeClock(1_800_000_000.0)
        material = IssuerMaterial.generate("cluster.local", now=clock.now - 10)
        source = ScriptedSource(material, clock, failures=3)
        spec = BackoffSpec(min_s=1.0, max_s=8.0, jitter=0.5)
        manager = CertManager(
            WEB,
            source,
            watch_bundle=False,
            retry=spec,
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(7),
        )
        await _run(manager, clock, steps=5)
        retries, renewals = clock.sleeps[:3], clock.sleeps[3:]
        for attempt, delay in enumerate(retries):
            base = spec.min_s * spec.factor**attempt
            assert base * (1 - spec.jitter) <= delay <= base
        assert len(set(retries)) == 3
        # The clock is now fractional and notAfter is whole seconds: within 0.7 s.
        assert renewals == [pytest.approx(0.7 * LEAF_TTL, abs=0.7)] * 2
        assert manager.failures == 3 and manager.renewals == 2
        assert manager.last_error is None

    asyncio.run(scenario())


def test_bundle_without_our_anchor_triggers_renewal() -> None:
    async def scenario() -> None:
        clock = FakeClock(1_800_000_000.0)
        material = IssuerMaterial.generate("cluster.local", now=clock.now - 10)
        source = ScriptedSource(material, clock)
        manager = CertManager(WEB, source, watch_bundle=False, clock=clock)
        await manager.renew()
        first_context = manager.client_context()

        other_anchor = make_anchor("cluster.local", now=clock.now).certificate
        # A bundle that still holds our anchor: contexts change, no renewal needed.
        manager._on_bundle(TrustBundle((*material.bundle.anchors, other_anchor)))
        assert manager.bundle_updates == 1
        assert manager.client_context() is not first_context
        assert not manager._renew_now.is_set()
        # A bundle without it: renew now.
        manager._on_bundle(TrustBundle((other_anchor,)))
        assert manager._renew_now.is_set()
        await manager.close()

    asyncio.run(scenario())


def test_unexpected_errors_do_not_stop_renewal() -> None:
    async def scenario() -> None:
        clock = FakeClock(1_800_000_000.0)
        material = IssuerMaterial.generate("cluster.local", now=clock.now - 10)
        source = ScriptedSource(material, clock, failures=1, failure=RuntimeError("bug"))
        manager = CertManager(WEB, source, watch_bundle=False, clock=clock, sleep=clock.sleep)
        await _run(manager, clock, steps=2)
        assert manager.failures == 1 and manager.renewals == 1 and manager.ready

    asyncio.run(scenario())
