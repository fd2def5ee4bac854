"""The retry rule (`tulle.core.retry`): route setting x failure kind x method."""

from __future__ import annotations

import pytest

from tulle.core.retry import IDEMPOTENT_METHODS, NOT_SENT, RESET, STATUS, retry_allowed

ALL_METHODS = [b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE", b"POST", b"PATCH"]
NON_IDEMPOTENT = [b"POST", b"PATCH", b"CONNECT", b"LOCK"]


@pytest.mark.parametrize("retryable", [None, True, False])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_request_never_sent_is_always_retried(retryable: bool | None, method: bytes) -> None:
    assert retry_allowed(retryable, method, NOT_SENT)


def test_idempotent_methods_are_those_of_rfc_9110() -> None:
    assert {b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"} == IDEMPOTENT_METHODS


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS))
def test_absent_retries_idempotent_methods_after_a_reset(method: bytes) -> None:
    assert retry_allowed(None, method, RESET)


@pytest.mark.parametrize("method", NON_IDEMPOTENT)
def test_absent_never_replays_a_sent_non_idempotent_request(method: bytes) -> None:
    assert not retry_allowed(None, method, RESET)


def test_method_match_is_exact_case() -> None:
    # Methods are case-sensitive (RFC 9110 9.1): "get" is not GET.
    assert not retry_allowed(None, b"get", RESET)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_absent_never_retries_a_status(status: int, method: bytes) -> None:
    assert not retry_allowed(None, method, STATUS, status)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_true_retries_resets_and_5xx_for_every_method(method: bytes) -> None:
    assert retry_allowed(True, method, RESET)
    assert retry_allowed(True, method, STATUS, 503)
    assert not retry_allowed(True, method, STATUS, 200)
    assert not retry_allowed(True, method, STATUS, 404)


def test_true_with_codes_retries_only_those() -> None:
    codes = frozenset({502, 503})
    assert retry_allowed(True, b"POST", STATUS, 503, codes)
    assert not retry_allowed(True, b"POST", STATUS, 500, codes)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_false_retries_only_unsent_requests(method: bytes) -> None:
    assert not retry_allowed(False, method, RESET)
    assert not retry_allowed(False, method, STATUS, 503)
    assert retry_allowed(False, method, NOT_SENT)
