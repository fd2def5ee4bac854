"""The one duration grammar: units, combinations, bounds, exactness, and errors naming the field."""

from __future__ import annotations

import pytest

from tulle.core.duration import (
    LIFETIME,
    MAX_DURATION_MS,
    MESH_DURATION,
    DurationError,
    DurationRule,
    duration_ms,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("1ms", 1),
        ("1s", 1000),
        ("1m", 60_000),
        ("1h", 3_600_000),
        ("500ms", 500),
        ("1m30s", 90_000),
        ("1h1m1s1ms", 3_661_001),
        # Units may repeat and come in any order; they add up.
        ("1s1s", 2000),
        ("1ms1h", 3_600_001),
        ("1.5s", 1500),
        ("0.001s", 1),
        ("007s", 7000),
        ("24h", MAX_DURATION_MS),
        ("0s", 0),
    ],
)
def test_mesh_durations_are_gateway_api_units_in_whole_milliseconds(
    text: str, milliseconds: int
) -> None:
    assert duration_ms(text) == milliseconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("24h", 86_400), ("90d", 90 * 86_400), ("2w", 14 * 86_400)],
)
def test_lifetimes_add_days_weeks_and_years(text: str, seconds: int) -> None:
    assert parse_duration(text, field="--ttl", rule=LIFETIME) == seconds
    assert parse_duration("10y", field="--ttl", rule=LIFETIME) == 10 * 365 * 86_400


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "1.5",
        "s",
        "ms",
        "1 s",
        " 1s",
        "1s ",
        "-1s",
        "+1s",
        "1S",
        "1H",
        "1.s",
        ".5s",
        "1e3s",
        "1d",
        "1y",
        "1us",
        "1sec",
        "1,5s",
        "\u0661s",
    ],
)
def test_anything_else_is_not_a_mesh_duration(text: str) -> None:
    reason = duration_ms(text)
    assert isinstance(reason, str)
    assert reason.startswith('expected a duration like "500ms" or "2s", got ')


def test_a_lifetime_has_no_milliseconds() -> None:
    assert duration_ms("500ms", LIFETIME) == (
        'expected a duration like "30s", "24h", "90d" or "1y", got "500ms"'
    )


@pytest.mark.parametrize(
    ("text", "rule", "reason"),
    [
        ("24h1ms", MESH_DURATION, 'must be at most 24h, got "24h1ms"'),
        ("1441m", MESH_DURATION, 'must be at most 24h, got "1441m"'),
        ("9" * 20 + "h", MESH_DURATION, f'must be at most 24h, got "{"9" * 20}h"'),
        ("101y", LIFETIME, 'must be at most 100y, got "101y"'),
        ("1.5ms", MESH_DURATION, 'must be a whole number of milliseconds, got "1.5ms"'),
        ("0.0000001ms", MESH_DURATION, 'must be a whole number of milliseconds, got "0.0000001ms"'),
    ],
)
def test_bounds_and_exactness(text: str, rule: DurationRule, reason: str) -> None:
    assert duration_ms(text, rule) == reason


def test_the_maximum_itself_is_allowed() -> None:
    assert duration_ms("100y", LIFETIME) == 100 * 365 * 86_400_000
    assert duration_ms("86400000ms") == MAX_DURATION_MS


def test_long_text_is_refused_without_being_converted_and_quoted_short() -> None:
    reason = duration_ms("1" * 10_000 + "s")
    assert reason == 'expected a duration like "500ms" or "2s", got "' + "1" * 64 + '"'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fast", 'services[0].timeout: expected a duration like "500ms" or "2s", got "fast"'),
        ("0s", "services[0].timeout: must be longer than zero"),
        ("0.0s", "services[0].timeout: must be longer than zero"),
        ("25h", 'services[0].timeout: must be at most 24h, got "25h"'),
    ],
)
def test_parse_duration_names_the_field(text: str, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text, field="services[0].timeout")
    assert str(caught.value) == message
    assert caught.value.field == "services[0].timeout"
    assert message.endswith(caught.value.reason)


def test_parse_duration_gives_seconds() -> None:
    assert parse_duration("1m30s", field="x") == 90.0
    assert parse_duration("1ms", field="x") == 0.001
    # A ValueError, for callers that catch those (CLI option parsing).
    with pytest.raises(ValueError, match=r"^--ttl: "):
        parse_duration("soon", field="--ttl", rule=LIFETIME)
