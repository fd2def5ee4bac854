"""Access-log lines: field choice, JSON shape, sampling with an injected random source."""

from __future__ import annotations

import json
import random

import pytest

from tulle.core.accesslog import FIELDS, Sampler, format_line, parse_fields


def test_fields_default_to_all_and_keep_the_chosen_order() -> None:
    assert parse_fields("") == FIELDS
    assert parse_fields(" status , path,status ") == ("status", "path")
    with pytest.raises(ValueError, match="unknown access-log field 'bogus'"):
        parse_fields("status,bogus")


def test_a_line_is_one_json_object_without_empty_values() -> None:
    line = format_line(
        ("status", "path", "error", "grpc_status"),
        {"status": 200, "path": '/a"b\n', "error": "", "grpc_status": None, "route": "x"},
    )
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"status": 200, "path": '/a"b\n'}


def test_sampling_keeps_its_share() -> None:
    sampler = Sampler(0.25, random.Random(7).random)
    kept = sum(sampler.keep() for _ in range(10_000))
    # sd ~= 43; +-250 is ~5.8 sd.
    assert 2250 <= kept <= 2750
    assert all(Sampler(1.0, lambda: 1 / 0).keep() for _ in range(10))  # never draws
    assert not any(Sampler(0.0).keep() for _ in range(1000))
