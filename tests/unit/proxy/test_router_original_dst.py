"""Routing a raw IP:PORT (a captured connection's original destination) by what
discovery knows of it (tulle.proxy.router), without sockets."""

from __future__ import annotations

import asyncio

from tulle.core.discovery import Endpoint, Profile, ServiceView, StaticResolver
from tulle.proxy.http1 import original_authority
from tulle.proxy.metrics import Metrics
from tulle.proxy.router import RAW_DISCOVERY_WAIT_S, PoolHandle, Router

ID = "spiffe://tulle.local/ns/default/sa/web"


def router(services: dict[str, list[Endpoint]]) -> Router:
    return Router(StaticResolver(services), lambda ep: PoolHandle(), Metrics(), max_pending=10)


def addresses(view: ServiceView) -> set[tuple[str, int]]:
    return set(view.endpoints)


def test_a_service_address_gets_the_services_endpoints() -> None:
    r = router(
        {"10.96.0.9:80": [Endpoint(("10.0.0.1", 8080), identity=ID), Endpoint(("10.0.0.2", 8080))]}
    )
    target = r.for_authority(b"10.96.0.9:80")
    assert not target.passthrough
    assert target.view.ready
    assert addresses(target.view) == {("10.0.0.1", 8080), ("10.0.0.2", 8080)}
    assert target.view.endpoints[("10.0.0.1", 8080)].identity == ID
    assert target.metrics_labels == "10.96.0.9:80"


def test_an_unknown_address_is_passed_through() -> None:
    target = router({}).for_authority(b"192.0.2.7:5432")
    assert target.passthrough
    assert target.view.ready and target.view.exists
    assert addresses(target.view) == {("192.0.2.7", 5432)}
    assert target.metrics_labels == ""
    assert target.refusal is None


def test_an_endpoint_of_a_followed_service_keeps_its_identity() -> None:
    r = router({"web": [Endpoint(("10.0.0.1", 8080), identity=ID)]})
    r.service("web")  # followed (a request named it)
    target = r.for_authority(b"10.0.0.1:8080")
    assert not target.passthrough
    assert target.view.endpoints[("10.0.0.1", 8080)].identity == ID


class _PendingResolver:
    """Discovery that has not answered yet (a control plane far away)."""

    def __init__(self) -> None:
        self.views: dict[str, ServiceView] = {}

    def resolve(self, name: str) -> ServiceView:
        return self.views.setdefault(name, ServiceView(name))

    async def close(self) -> None:
        return None


def test_discovery_answer_later_switches_from_waiting_to_the_service() -> None:
    async def run() -> None:
        resolver = _PendingResolver()
        r = Router(resolver, lambda ep: PoolHandle(), Metrics(), max_pending=10)
        target = r.for_authority(b"10.96.0.9:8080")
        assert not target.view.ready  # the first request waits for the answer
        resolver.views["10.96.0.9:8080"].apply_profile(Profile(timeout_s=2.0))
        resolver.views["10.96.0.9:8080"].apply_reset([Endpoint(("10.0.0.5", 8080), identity=ID)])
        assert target.view.ready and not target.passthrough
        assert addresses(target.view) == {("10.0.0.5", 8080)}
        assert target.view.profile.timeout_s == 2.0
        # The service goes away: the address is passed through again.
        resolver.views["10.96.0.9:8080"].apply_no_endpoints(exists=False)
        assert target.passthrough and addresses(target.view) == {("10.96.0.9", 8080)}

    asyncio.run(run())


def test_silent_discovery_passes_through_after_the_wait() -> None:
    async def run() -> None:
        r = Router(_PendingResolver(), lambda ep: PoolHandle(), Metrics(), max_pending=10)
        target = r.for_authority(b"10.96.0.9:8080")
        assert not target.view.ready
        assert await target.view.wait_known(RAW_DISCOVERY_WAIT_S * 5)
        assert target.passthrough
        assert addresses(target.view) == {("10.96.0.9", 8080)}

    asyncio.run(run())


def test_original_authority_brackets_ipv6() -> None:
    assert original_authority(("10.0.0.1", 80)) == b"10.0.0.1:80"
    assert original_authority(("fd00::1", 8080)) == b"[fd00::1]:8080"
    target = router({}).for_authority(original_authority(("fd00::1", 8080)))
    assert addresses(target.view) == {("fd00::1", 8080)}


def test_a_passed_through_address_stays_passthrough_on_later_answers() -> None:
    async def run() -> None:
        resolver = _PendingResolver()
        r = Router(resolver, lambda ep: PoolHandle(), Metrics(), max_pending=10)
        target = r.for_authority(b"192.0.2.7:80")
        resolver.views["192.0.2.7:80"].apply_no_endpoints(exists=False)
        assert target.passthrough
        # Another answer: the target's own endpoint is not "a known endpoint".
        resolver.views["192.0.2.7:80"].apply_no_endpoints(exists=False)
        assert target.passthrough

    asyncio.run(run())


def test_inbound_fixed_at_the_original_port() -> None:
    r = Router(
        StaticResolver({}),
        lambda ep: PoolHandle(),
        Metrics(),
        max_pending=10,
        fixed_target=("127.0.0.1", 8080),
    )
    assert r.fixed_at(8080) is r.fixed
    other = r.fixed_at(2525)
    assert addresses(other.view) == {("127.0.0.1", 2525)}
    assert other.default_retryable is False  # inbound: retries are the caller's
    assert r.fixed_at(2525) is other  # built once per port
    assert other in r.targets()
