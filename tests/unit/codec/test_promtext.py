"""The exposition-format parser: agrees with prometheus_client on real proxy pages."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tulle.codec.promtext import ParseError, parse
from tulle.proxy.metrics import Metrics, render


def _proxy_page() -> str:
    metrics = Metrics()
    stats = metrics.http("outbound", "books:8080", "127.0.0.1:9", "books", "get-items")
    stats.requests += 2
    stats.record_response(200, True, 0.004)
    stats.record_response(500, False, 0.120, "upstream")
    metrics.inc("retry_total", (("direction", "outbound"), ("dst_service", "books")))
    return render(metrics.snapshot())


def test_parses_a_proxy_page_like_prometheus_client() -> None:
    text = _proxy_page()
    ours = {(s.name, s.labels, s.value) for s in parse(text)}
    theirs = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }
    assert ours == theirs


def test_escapes_special_values_and_timestamps() -> None:
    text = (
        "# HELP x a help line\n# TYPE x gauge\n"
        'x{path="/a\\"b\\\\c\\nd",z="1"} +Inf 1700000000000\n'
        "y NaN\n"
        "z -Inf\n"
        "w{} 3.5e2\n"
    )
    samples = parse(text)
    assert samples[0].label("path") == '/a"b\\c\nd'
    assert samples[0].labels == (("path", '/a"b\\c\nd'), ("z", "1"))
    assert samples[0].value == math.inf
    assert math.isnan(samples[1].value)
    assert samples[2].value == -math.inf
    assert samples[3].value == 350.0


@pytest.mark.parametrize("line", ['x{a="1" 2', "x{a=1} 2", "x", 'x{a="1"}', "x notanumber"])
def test_bad_lines_name_their_line(line: str) -> None:
    with pytest.raises(ParseError, match="line 2"):
        parse("ok 1\n" + line + "\n")
