"""Metrics: what the request path records, as Prometheus text (tulle.proxy.metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tulle.proxy.metrics import Metrics, merge, render


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_responses_render_with_classification_error_and_grpc_status() -> None:
    metrics = Metrics()
    stats = metrics.http("outbound", "echo", "10.0.0.1:80", "echo", "fail")
    stats.requests += 2
    stats.record_response(200, True, 0.004, "", 0)
    stats.record_response(200, False, 0.5, "response-timeout", 4)
    metrics.proxy_error("outbound", "response-timeout")
    metrics.inc("retry_total", (("direction", "outbound"), ("dst_service", "echo")))
    samples = _samples(render(metrics.snapshot()))
    base = (
        ("authority", "echo"), ("direction", "outbound"), ("dst_service", "echo"),
        ("route", "fail"), ("target_addr", "10.0.0.1:80"), ("tls", "false"),
    )  # fmt: skip
    ok = tuple(sorted((*base, ("classification", "success"), ("grpc_status_code", "0"),
                       ("status_code", "200"))))  # fmt: skip
    assert samples[("response_total", ok)] == 1
    failed = tuple(sorted((*base, ("classification", "failure"), ("error", "response-timeout"),
                           ("grpc_status_code", "4"), ("status_code", "200"))))  # fmt: skip
    assert samples[("response_total", failed)] == 1
    assert samples[("request_total", tuple(sorted(base)))] == 2
    assert samples[("response_latency_ms_count", tuple(sorted(base)))] == 2
    reason = (("direction", "outbound"), ("reason", "response-timeout"))
    assert samples[("proxy_error_total", reason)] == 1
    retry = (("direction", "outbound"), ("dst_service", "echo"))
    assert samples[("retry_total", retry)] == 1


def test_workers_snapshots_add_up() -> None:
    workers = []
    for _ in range(3):
        metrics = Metrics()
        stats = metrics.http("inbound", "", "127.0.0.1:8080", "", "", "spiffe://x")
        stats.requests += 1
        stats.record_response(204, True, 0.001)
        workers.append(metrics.snapshot())
    samples = _samples(render(merge(workers)))
    counted = [v for (name, _), v in samples.items() if name == "request_total"]
    assert counted == [3]
    labels = dict(next(k[1] for k in samples if k[0] == "request_total"))
    assert labels["client_id"] == "spiffe://x" and labels["tls"] == "true"
