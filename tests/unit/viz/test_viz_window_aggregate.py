"""The window store and the aggregations: rates, success rates, quantiles, edges."""

from __future__ import annotations

import pytest

from tulle.codec.promtext import Sample, parse
from tulle.core.scrape import ScrapeTarget
from tulle.proxy.metrics import Metrics, render
from tulle.viz import aggregate
from tulle.viz.window import WindowStore

WEB = ScrapeTarget("web", "web-0", "127.0.0.1:1")
BOOKS = ScrapeTarget("books", "books-0", "127.0.0.1:2")


class FakeProxy:
    """A proxy's metrics object, rendered and parsed as a scrape would."""

    def __init__(self) -> None:
        self.metrics = Metrics()

    def serve(
        self,
        direction: str,
        dst: str,
        status: int,
        latency_s: float,
        n: int,
        *,
        route: str = "",
        peer_id: str = "",
    ) -> None:
        stats = self.metrics.http(direction, f"{dst}:80", "127.0.0.1:9", dst, route, peer_id)
        for _ in range(n):
            stats.requests += 1
            stats.record_response(status, status < 500, latency_s)

    def samples(self) -> list[Sample]:
        return parse(render(self.metrics.snapshot()))


def _store(now: float = 1000.0) -> tuple[WindowStore, FakeProxy, FakeProxy]:
    store = WindowStore()
    web, books = FakeProxy(), FakeProxy()
    store.ingest(WEB, now - 30, web.samples())
    store.ingest(BOOKS, now - 30, books.samples())
    return store, web, books


def test_first_scrape_is_a_baseline_and_rates_use_the_observed_time() -> None:
    store, web, books = _store()
    web.serve("outbound", "books", 200, 0.004, 90, route="get-items")
    web.serve("outbound", "books", 500, 0.030, 10, route="get-items")
    client = "spiffe://tulle.local/ns/default/sa/web"
    books.serve("inbound", "", 200, 0.0035, 90, peer_id=client)
    books.serve("inbound", "", 500, 0.025, 10, peer_id=client)
    store.ingest(WEB, 1000.0, web.samples())
    store.ingest(BOOKS, 1000.0, books.samples())
    data = store.window(60, now=1000.0)
    assert data.seconds == pytest.approx(30.0)  # only 30 s observed so far
    rows = {row["service"]: row for row in aggregate.stat_services(data)}
    books_row = rows["books"]
    assert books_row["requests"] == 100
    assert books_row["rps"] == pytest.approx(100 / 30, rel=1e-3)
    assert books_row["success_rate"] == pytest.approx(0.9)
    assert books_row["tls_share"] == pytest.approx(1.0)
    assert books_row["source"] == "inbound"
    # 90 in (3,4] ms, 10 in (20,30] ms: p50 inside (3,4], p99 inside (20,30].
    assert 3.0 < books_row["latency_ms"]["p50"] <= 4.0
    assert 20.0 < books_row["latency_ms"]["p99"] <= 30.0
    assert rows["web"]["requests"] == 0


def test_counter_reset_counts_the_new_value() -> None:
    store, _web, books = _store()
    books.serve("inbound", "", 200, 0.001, 50)
    store.ingest(BOOKS, 990.0, books.samples())
    restarted = FakeProxy()
    restarted.serve("inbound", "", 200, 0.001, 5)
    store.ingest(BOOKS, 1000.0, restarted.samples())
    rows = aggregate.stat_services(store.window(60, now=1000.0), "books")
    assert rows[0]["requests"] == 55


def test_window_excludes_old_increments() -> None:
    store, _web, books = _store(now=1000.0)
    books.serve("inbound", "", 200, 0.001, 7)
    store.ingest(BOOKS, 975.0, books.samples())
    books.serve("inbound", "", 200, 0.001, 3)
    store.ingest(BOOKS, 1000.0, books.samples())
    assert aggregate.stat_services(store.window(10, now=1000.0), "books")[0]["requests"] == 3
    assert aggregate.stat_services(store.window(60, now=1000.0), "books")[0]["requests"] == 10


def test_routes_edges_and_instances() -> None:
    store, web, books = _store()
    web.serve("outbound", "books", 200, 0.004, 8, route="get-items")
    web.serve("outbound", "books", 504, 0.5, 2, route="")
    books.serve("inbound", "", 200, 0.003, 10)
    store.ingest(WEB, 1000.0, web.samples())
    store.ingest(BOOKS, 1000.0, books.samples())
    data = store.window(60, now=1000.0)
    routes = {row["route"]: row for row in aggregate.routes(data, "books")}
    assert routes["get-items"]["requests"] == 8
    assert routes["get-items"]["success_rate"] == 1.0
    assert routes[aggregate.DEFAULT_ROUTE]["success_rate"] == 0.0
    edges = aggregate.edges(data)
    assert [(e["src"], e["dst"], e["requests"]) for e in edges] == [("web", "books", 10)]
    assert edges[0]["secured"] is False
    instances = aggregate.stat_instances(data)
    assert [(r["instance"], r["requests"]) for r in instances] == [("books-0", 10), ("web-0", 0)]


def test_service_without_a_proxy_is_shown_from_its_callers() -> None:
    store, web, _ = _store()
    web.serve("outbound", "payments", 200, 0.002, 4)
    store.ingest(WEB, 1000.0, web.samples())
    rows = {row["service"]: row for row in aggregate.stat_services(store.window(60, now=1000.0))}
    assert rows["payments"]["source"] == "outbound"
    assert rows["payments"]["requests"] == 4


def test_edges_carry_identities_from_labels() -> None:
    store, web, books = _store()
    web.serve("outbound", "books", 200, 0.002, 4, peer_id="spiffe://t/ns/default/sa/books")
    books.serve("inbound", "", 200, 0.002, 4, peer_id="spiffe://t/ns/default/sa/web")
    store.ingest(WEB, 1000.0, web.samples())
    store.ingest(BOOKS, 1000.0, books.samples())
    edge = aggregate.edges(store.window(60, now=1000.0))[0]
    assert edge["server_id"] == "spiffe://t/ns/default/sa/books"
    assert edge["client_id"] == "spiffe://t/ns/default/sa/web"
    assert edge["secured"] is True
    assert edge["tls_share"] == 1.0


def test_timeseries_steps() -> None:
    store, _, books = _store(now=1000.0)
    for second in range(1, 31):
        books.serve("inbound", "", 200, 0.001, 2)
        store.ingest(BOOKS, 970.0 + second, books.samples())
    slices = store.steps(30, 10, now=1000.0)
    points = aggregate.timeseries(
        [(1000.0 - 30 + 10 * (i + 1), data) for i, data in enumerate(slices)], "books"
    )
    assert [p["rps"] for p in points] == [2.0, 2.0, 2.0]
    assert all(p["success_rate"] == 1.0 for p in points)


def test_routes_count_inbound_limits_and_list_quiet_configured_routes() -> None:
    store, web, books = _store()
    web.serve("outbound", "books", 200, 0.004, 6, route="writes")
    web.serve("outbound", "books", 429, 0.001, 4, route="writes")
    # books' own proxy: its policy route `writes` refused 4, its server limit 1.
    for route, limit, decision, n in (
        ("writes", "writes-limit", "allow", 6),
        ("writes", "writes-limit", "limit", 4),
        ("", "books-total", "limit", 1),
    ):
        labels = (("server", "books-http"), ("route", route), ("limit", limit))
        for _ in range(n):
            books.metrics.inc("inbound_http_ratelimit_total", (*labels, ("decision", decision)))
    store.ingest(WEB, 1000.0, web.samples())
    store.ingest(BOOKS, 1000.0, books.samples())
    data = store.window(60, now=1000.0)
    rows = {row["route"]: row for row in aggregate.routes(data, "books", ["writes", "quiet"])}
    assert rows["writes"]["rate_limited_inbound"] == 4
    assert rows["writes"]["rate_limited_outbound"] == 0
    assert rows["writes"]["rate_limited"] == 4
    assert rows["writes"]["faults_injected"] == 0
    # A configured route without traffic: listed, every count zero.
    assert rows["quiet"]["requests"] == 0 and rows["quiet"]["rate_limited"] == 0
    assert rows["quiet"]["success_rate"] is None
    assert aggregate.inbound_limit_counts(data, "books") == {
        ("writes-limit", "writes"): {"allowed": 6, "limited": 4},
        ("books-total", ""): {"allowed": 0, "limited": 1},
    }
    # Another service's proxies' limits are not books'.
    assert aggregate.inbound_limit_counts(data, "web") == {}


def test_routes_count_a_routes_mirror_copies() -> None:
    store, web, _books = _store()
    web.serve("outbound", "books", 200, 0.004, 10, route="search")
    for result, n in (("sent", 4), ("dropped", 1)):
        labels = (
            ("direction", "outbound"),
            ("dst_service", "shadow"),
            ("route_service", "books"),
            ("route", "search"),
            ("result", result),
        )
        for _ in range(n):
            web.metrics.inc("mirror_requests_total", labels)
    store.ingest(WEB, 1000.0, web.samples())
    data = store.window(60, now=1000.0)
    rows = {row["route"]: row for row in aggregate.routes(data, "books")}
    assert rows["search"]["mirrored"] == 4 and rows["search"]["requests"] == 10
    # The copies are not the mirror's traffic, nor an edge to it.
    assert aggregate.routes(data, "shadow") == []
    assert [(e["src"], e["dst"]) for e in aggregate.edges(data)] == [("web", "books")]
    assert "shadow" not in {row["service"] for row in aggregate.stat_services(data)}
