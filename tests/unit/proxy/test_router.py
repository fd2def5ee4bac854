"""Route matching, traffic split and endpoint updates (tulle.proxy.router), without sockets."""

from __future__ import annotations

from collections import Counter

from tulle.core.discovery import (
    Backend,
    Endpoint,
    HeaderMatch,
    Profile,
    Route,
    RouteMatch,
    StaticResolver,
)
from tulle.proxy.metrics import Metrics
from tulle.proxy.router import PoolHandle, Router


class _Pool(PoolHandle):
    def __init__(self) -> None:
        self.closed = False

    def close_idle(self) -> None:
        self.closed = True


def _router(services: dict[str, list[tuple[str, int]]]) -> Router:
    resolver = StaticResolver({n: [Endpoint(a) for a in eps] for n, eps in services.items()})
    return Router(resolver, lambda ep: _Pool(), Metrics(), max_pending=10)


def _no_header(name: bytes) -> bytes | None:
    return None


def test_routes_match_by_method_path_and_header_first_match_wins() -> None:
    router = _router({"web": [("10.0.0.1", 80)]})
    target = router.service("web")
    routes = (
        Route("post-items", (RouteMatch(path_prefix="/items", method="POST"),), timeout_s=1.0),
        Route("items", (RouteMatch(path_prefix="/items"),)),
        Route("exact", (RouteMatch(path_exact="/a"),)),
        Route("regex", (RouteMatch(path_regex="/v[0-9]+/.*"),)),
        Route("canary", (RouteMatch(headers=(HeaderMatch("x-canary", "1"),)),)),
    )
    target.view.apply_profile(Profile(routes=routes, timeout_s=5.0))

    def name(method: bytes, path: bytes, header: object = _no_header) -> str:
        return target.route(method, path, header).name  # type: ignore[arg-type]

    assert name(b"POST", b"/items/3") == "post-items"
    assert target.route(b"POST", b"/items", _no_header).timeout_s == 1.0
    assert name(b"GET", b"/items/3?x=1") == "items"
    assert name(b"GET", b"/itemsx") == "default"  # a prefix ends at a segment
    assert name(b"GET", b"/a") == "exact" and name(b"GET", b"/a/b") == "default"
    assert name(b"GET", b"/v2/x") == "regex"
    assert name(b"GET", b"/", lambda n: b"1" if n == b"x-canary" else None) == "canary"
    # Requests no route matches get the profile's default timeout.
    assert target.route(b"GET", b"/zzz", _no_header).timeout_s == 5.0


def test_a_split_spreads_requests_by_weight_over_backends() -> None:
    router = _router({"web": [("10.0.0.1", 80)], "web-v2": [("10.0.0.2", 80)]})
    apex = router.service("web")
    apex.view.apply_profile(Profile(backends=(Backend("web", 3), Backend("web-v2", 1))))
    picked = Counter(apex.backend().name for _ in range(4000))
    assert set(picked) == {"web", "web-v2"}
    assert 0.2 < picked["web-v2"] / 4000 < 0.3


def test_an_endpoint_that_leaves_discovery_closes_its_idle_pool() -> None:
    router = _router({"web": [("10.0.0.1", 80), ("10.0.0.2", 80)]})
    target = router.service("web")
    states = {s.address: s for s in target.balancer.states()}
    pool = target.pool_for(states[("10.0.0.2", 80)])
    assert isinstance(pool, _Pool)
    target.view.apply_reset([Endpoint(("10.0.0.1", 80))])
    assert pool.closed
    assert [s.address for s in target.balancer.states()] == [("10.0.0.1", 80)]


def test_authorities_are_cached_and_normalised() -> None:
    router = _router({"web": [("10.0.0.1", 80)]})
    assert router.for_authority(b"Web:80") is router.service("web")
    assert router.for_authority(b"web.") is router.service("web")
    assert router.for_authority(b"web") is router.for_authority(b"web")
