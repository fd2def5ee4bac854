"""Traffic-control fields of the manifest (route faults), and their trip through the API."""

from __future__ import annotations

from textwrap import dedent

import pytest

from tulle.api.destination_client import profile_from_message
from tulle.control.destination.translator import profile_message
from tulle.control.manifest import ManifestError, parse_manifest
from tulle.core.discovery import FaultSpec, HeaderMatch

FAULTS = dedent(
    """\
    services:
      - name: books
        endpoints: [127.0.0.1:9001]
        routes:
          - name: chaos
            matches: [{path: {value: /chaos}}]
            fault:
              delay: {duration: 250ms, percent: 10}
              abort: {status: 503, grpcStatus: 14, percent: 5.5}
              headers: [{name: X-Chaos, value: "1"}]
          - name: grpc-only
            fault:
              abort: {grpcStatus: 8, percent: 100}
    """
)


def test_faults_parse_to_the_discovery_model() -> None:
    routes = {r.name: r for r in parse_manifest(FAULTS).services["books"].profile.routes}
    assert routes["chaos"].fault == FaultSpec(
        delay_s=0.25,
        delay_percent=10,
        abort_status=503,
        abort_grpc_status=14,
        abort_percent=5.5,
        headers=(HeaderMatch("x-chaos", "1"),),
    )
    assert routes["grpc-only"].fault == FaultSpec(abort_grpc_status=8, abort_percent=100)


def test_faults_survive_the_destination_api_unchanged() -> None:
    profile = parse_manifest(FAULTS).services["books"].profile
    assert profile_from_message(profile_message("books", profile)) == profile


def test_a_route_without_a_fault_carries_none() -> None:
    text = "services:\n  - name: a\n    routes: [{name: r}]\n"
    (route,) = parse_manifest(text).services["a"].profile.routes
    assert route.fault is None
    message = profile_message("a", parse_manifest(text).services["a"].profile)
    assert not message.routes[0].HasField("fault")


BAD = [
    ("fault: {}", "routes[0].fault: give delay, abort or both"),
    ("fault: {abort: {percent: 5}}", "routes[0].fault.abort: give status, grpcStatus or both"),
    ("fault: {abort: {status: 700, percent: 5}}", "status: must be between 200 and 599"),
    ("fault: {abort: {grpcStatus: 0, percent: 5}}", "grpcStatus: must be between 1 and 16"),
    ("fault: {abort: {status: 503, percent: 101}}", "percent: must be between 0 and 100"),
    ("fault: {delay: {duration: 1s}}", 'delay: missing required field "percent"'),
    ("fault: {delay: {duration: soon, percent: 1}}", "delay.duration: "),
    ("fault: {abort: {status: 503, percent: 1}, bogus: 1}", "fault.bogus: unknown field"),
]


@pytest.mark.parametrize(("fault", "message"), BAD)
def test_bad_faults_name_the_field(fault: str, message: str) -> None:
    text = f"services:\n  - name: a\n    routes:\n      - name: r\n        {fault}\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert message in str(caught.value)
