"""The admin listener: /ready, /live, and /metrics in Prometheus text format with
Linkerd's names, labels and exact counts after known traffic."""

from __future__ import annotations

import urllib.request

import pytest
from support.mesh import Backend, Metrics, Proxy, start_proxy
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection, request_bytes

pytestmark = pytest.mark.integration

BOOKS_AUTHORITIES = ("books", "books:80")
SUCCESSES = 5
FAILURES = 3
UNKNOWN = 2
INBOUND = 4


@pytest.fixture(scope="module")
def after_traffic(
    module_processes: ProcessGroup, http_backend: Backend
) -> tuple[Proxy, Metrics, Backend]:
    """A fresh proxy, known traffic through it, then one scrape."""
    proxy = start_proxy(
        module_processes,
        app_addr=http_backend.addr,
        static_dst={"books": [http_backend.addr]},
        name="proxy-metrics",
    )
    with RawHttpConnection(*proxy.outbound) as connection:
        for _ in range(SUCCESSES):
            connection.send(request_bytes("GET", "/", "books"))
            assert connection.read_response().status == 200
        for _ in range(FAILURES):
            connection.send(request_bytes("GET", "/status/500", "books"))
            assert connection.read_response().status == 500
    for _ in range(UNKNOWN):
        with RawHttpConnection(*proxy.outbound) as connection:
            connection.send(request_bytes("GET", "http://ghost/", "ghost"))
            assert connection.read_response().status == 503
    with RawHttpConnection(*proxy.inbound) as connection:
        for _ in range(INBOUND):
            connection.send(request_bytes("GET", "/status/201", "app"))
            assert connection.read_response().status == 201
    return proxy, proxy.metrics(), http_backend


def _books(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        metrics.total(name, direction="outbound", authority=authority, **labels)
        for authority in BOOKS_AUTHORITIES
    )


def test_ready_and_live(one_hop: Proxy) -> None:
    for path in ("/ready", "/live"):
        with urllib.request.urlopen(f"{one_hop.admin_url}{path}", timeout=5) as response:
            assert response.status == 200


def test_metrics_content_type_and_linkerd_names(
    after_traffic: tuple[Proxy, Metrics, Backend],
) -> None:
    proxy, metrics, _ = after_traffic
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
    expected = {
        "request_total",
        "response_total",
        "response_latency_ms_bucket",
        "response_latency_ms_count",
        "response_latency_ms_sum",
        "tcp_open_total",
        "tcp_close_total",
        "tcp_open_connections",
        "tcp_read_bytes_total",
        "tcp_write_bytes_total",
    }
    assert expected <= metrics.names(), expected - metrics.names()


def test_request_and_response_counts(after_traffic: tuple[Proxy, Metrics, Backend]) -> None:
    _, metrics, _ = after_traffic
    assert _books(metrics, "request_total") == SUCCESSES + FAILURES
    assert (
        _books(metrics, "response_total", status_code="200", classification="success") == SUCCESSES
    )
    assert (
        _books(metrics, "response_total", status_code="500", classification="failure") == FAILURES
    )
    assert metrics.total("request_total", direction="inbound") == INBOUND
    assert (
        metrics.total(
            "response_total", direction="inbound", status_code="201", classification="success"
        )
        == INBOUND
    )


def test_unknown_name_counted_as_failure(after_traffic: tuple[Proxy, Metrics, Backend]) -> None:
    _, metrics, _ = after_traffic
    assert (
        metrics.total(
            "response_total", direction="outbound", status_code="503", classification="failure"
        )
        == UNKNOWN
    )


def test_target_addr_label_names_the_endpoint(
    after_traffic: tuple[Proxy, Metrics, Backend],
) -> None:
    _, metrics, backend = after_traffic
    assert _books(metrics, "request_total", target_addr=backend.addr) == SUCCESSES + FAILURES
    assert metrics.total("request_total", direction="inbound", target_addr=backend.addr) == INBOUND


def test_latency_histogram_is_consistent(after_traffic: tuple[Proxy, Metrics, Backend]) -> None:
    _, metrics, _ = after_traffic
    assert _books(metrics, "response_latency_ms_count") == SUCCESSES + FAILURES
    buckets = [
        (labels, value)
        for authority in BOOKS_AUTHORITIES
        for labels, value in metrics.matching(
            "response_latency_ms_bucket", direction="outbound", authority=authority
        )
    ]
    infinite = sum(value for labels, value in buckets if labels["le"] == "+Inf")
    assert infinite == SUCCESSES + FAILURES
    # Cumulative buckets never decrease with le, for every series.
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for labels, value in buckets:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        series.setdefault(key, []).append((float(labels["le"]), value))
    for points in series.values():
        counts = [count for _, count in sorted(points)]
        assert counts == sorted(counts)
    assert _books(metrics, "response_latency_ms_sum") > 0


def test_tcp_metrics_count_connections_and_bytes(
    after_traffic: tuple[Proxy, Metrics, Backend],
) -> None:
    _, metrics, _ = after_traffic
    # Client side of outbound: 1 keep-alive connection + one per unknown-name request.
    assert metrics.total("tcp_open_total", direction="outbound") >= 1 + UNKNOWN
    assert metrics.total("tcp_open_total", direction="inbound") >= 1
    assert metrics.total("tcp_close_total", direction="outbound") >= UNKNOWN
    assert metrics.total("tcp_read_bytes_total", direction="outbound") > 0
    assert metrics.total("tcp_write_bytes_total", direction="outbound") > 0
    assert metrics.total("tcp_open_connections") >= 0
    opened = metrics.total("tcp_open_total")
    closed = metrics.total("tcp_close_total")
    assert opened - closed == pytest.approx(metrics.total("tcp_open_connections"))


def test_metrics_scrape_is_cheap_and_repeatable(
    after_traffic: tuple[Proxy, Metrics, Backend],
) -> None:
    proxy, first, _ = after_traffic
    second = proxy.metrics()
    # Scraping is not traffic: HTTP counts are unchanged between two scrapes.
    assert _books(second, "request_total") == _books(first, "request_total")
