"""The manifest: the example validates and converts; every bad input names field and line."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import pytest

from tulle.control.manifest import (
    MAX_MANIFEST_BYTES,
    DurationError,
    ManifestError,
    duration_ms,
    load_manifest,
    parse_duration,
    parse_manifest,
)
from tulle.core.discovery import Backend, HeaderMatch, RetryBudgetSpec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mesh.yaml"


def test_the_example_is_valid_and_converts_to_the_discovery_model() -> None:
    manifest = load_manifest(EXAMPLE)
    assert set(manifest.services) == {"web", "api", "api-v1", "api-v2", "users", "db"}
    web = manifest.services["web"]
    assert web.port == 8080
    assert [ep.address for ep in web.endpoints] == [("127.0.0.1", 9001), ("127.0.0.1", 9002)]
    assert web.endpoints[1].weight == 5000
    assert web.endpoints[1].labels == {"zone": "b", "version": "v1"}
    # The service identity is inherited by endpoints that give none.
    assert web.endpoints[0].identity == "spiffe://tulle.local/ns/default/sa/web"
    routes = {route.name: route for route in web.profile.routes}
    assert routes["get-user"].matches[0].path_regex == "/users/[0-9]+"
    assert routes["get-user"].matches[0].method == "GET"
    assert routes["get-user"].timeout_s == 0.5
    assert routes["get-user"].retryable is True
    assert routes["post-order"].timeout_s == 2.0
    assert routes["post-order"].retryable is False
    assert routes["static"].matches[0].path_prefix == "/static"
    assert routes["static"].matches[1].headers == (HeaderMatch("x-static", "1"),)
    assert routes["static"].retry_statuses == (502, 503)
    assert routes["static"].retryable is True
    assert web.profile.timeout_s == 10.0
    assert web.profile.retry_budget == RetryBudgetSpec(0.2, 10.0, 10.0)
    api = manifest.services["api"]
    assert api.profile.backends == (Backend("api-v1", 90), Backend("api-v2", 10))
    assert api.endpoints == ()
    assert manifest.services["api-v1"].endpoints[0].protocol_hint == "h2"
    users = manifest.services["users"]
    assert users.protocol == "http/1.1"
    assert manifest.services["db"].endpoints[0].protocol_hint == "opaque"
    assert manifest.policy == {}


def test_an_empty_services_list_is_valid() -> None:
    assert parse_manifest("services: []\n").services == {}
    assert parse_manifest("services:\n").services == {}


def test_policy_is_kept_as_written_and_validated() -> None:
    # The validation itself is tested in tests/unit/policy/.
    manifest = parse_manifest(
        "services: [{name: a}]\npolicy:\n  servers: [{name: a, workload: a, port: 80}]\n"
    )
    assert manifest.policy == {"servers": [{"name": "a", "workload": "a", "port": 80}]}
    assert manifest.authorization.servers[0].port == 80


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5)],
)
def test_durations_follow_gateway_api(text: str, seconds: float) -> None:
    assert parse_duration(text, field="timeout") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["fast", "5", "-1s", "1d", "s", "1 s", ""])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError, match=r"^timeout: "):
        parse_duration(text, field="timeout")


# Each bad document names the exact "file:line: field: message" it must produce.
BAD = [
    ("", "mesh.yaml: the manifest is empty; expected a top-level `services:` list"),
    ("services: [\n", "mesh.yaml:2: YAML syntax error"),
    ("services: 3\n", 'mesh.yaml:1: services: expected a list, got "3"'),
    (
        "service: []\n",
        "mesh.yaml:1: service: unknown field (known: services, policy, ingress, isolated); "
        'did you mean "services"?',
    ),
    ("policy: 4\nservices: []\n", 'mesh.yaml:1: policy: expected a mapping, got "4"'),
    ("services:\n  - port: 80\n", 'mesh.yaml:2: services[0]: missing required field "name"'),
    ("services:\n  - name: Web\n", 'mesh.yaml:2: services[0].name: "Web" is not a valid name'),
    ("services:\n  - name: a_b\n", 'mesh.yaml:2: services[0].name: "a_b" is not a valid name'),
    ("services:\n  - name: 12\n", 'mesh.yaml:2: services[0].name: expected a name, got "12"'),
    (
        "services:\n  - name: a\n  - name: a\n",
        'mesh.yaml:3: services[1].name: duplicate service "a" (first on line 2)',
    ),
    (
        "services:\n  - name: a\n    name: b\n",
        "mesh.yaml:3: services[0].name: duplicate key (first given on line 2)",
    ),
    (
        "services:\n  - name: a\n    port: 70000\n",
        "mesh.yaml:3: services[0].port: must be between 1 and 65535, got 70000",
    ),
    (
        "services:\n  - name: a\n    port: http\n",
        'mesh.yaml:3: services[0].port: expected a whole number, got "http"',
    ),
    (
        "services:\n  - name: a\n    protocol: http2\n",
        "mesh.yaml:3: services[0].protocol: expected one of http/1.1, h2,"
        ' grpc, opaque, got "http2"',
    ),
    (
        "services:\n  - name: a\n    endpoint: []\n",
        "mesh.yaml:3: services[0].endpoint: unknown field (known: name, port, protocol, identity, "
        "endpoints, instances, timeout, routes, retryBudget, backends, affinity, requestOverride); "
        'did you mean "endpoints"?',
    ),
    (
        "services:\n  - name: a\n    endpoints:\n      - 127.0.0.1\n",
        "mesh.yaml:4: services[0].endpoints[0]: bad address '127.0.0.1': expected HOST:PORT",
    ),
    (
        "services:\n  - name: a\n    endpoints:\n      - 127.0.0.1:x\n",
        "mesh.yaml:4: services[0].endpoints[0]: bad address '127.0.0.1:x':"
        " port 'x' is not a number",
    ),
    (
        "services:\n  - name: a\n    endpoints: [1.2.3.4:5, 1.2.3.4:5]\n",
        "mesh.yaml:3: services[0].endpoints[1]: duplicate endpoint 1.2.3.4:5 (first on line 3)",
    ),
    (
        "services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4:5\n        weight: 0\n",
        "mesh.yaml:5: services[0].endpoints[0].weight: must be between 1 and 1000000, got 0",
    ),
    (
        "services:\n  - name: a\n    endpoints:\n      - {weight: 3}\n",
        'mesh.yaml:4: services[0].endpoints[0]: missing required field "address"',
    ),
    (
        "services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4:5\n        labels: [x]\n",
        "mesh.yaml:5: services[0].endpoints[0].labels: expected a mapping, got a list",
    ),
    (
        "services:\n  - name: a\n    identity: web\n",
        "mesh.yaml:3: services[0].identity: expected a SPIFFE ID like "
        '"spiffe://tulle.local/ns/default/sa/web", got "web"',
    ),
    (
        "services:\n  - name: a\n    timeout: 0s\n",
        "mesh.yaml:3: services[0].timeout: must be longer than zero",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        timeout: fast\n",
        'mesh.yaml:5: services[0].routes[0].timeout: expected a duration like "500ms" or "2s", '
        'got "fast"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - timeout: 1s\n",
        'mesh.yaml:4: services[0].routes[0]: missing required field "name"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - {name: r}\n      - {name: r}\n",
        'mesh.yaml:5: services[0].routes[1].name: duplicate route "r" (first on line 4)',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - path: {type: Prefix, value: /a}\n",
        "mesh.yaml:6: services[0].routes[0].matches[0].path.type: expected Exact, PathPrefix or "
        'RegularExpression, got "Prefix"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - path: {value: a}\n",
        'mesh.yaml:6: services[0].routes[0].matches[0].path.value: a path starts with "/", got "a"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - path: {type: RegularExpression, value: '/a('}\n",
        "mesh.yaml:6: services[0].routes[0].matches[0].path.value: invalid regular expression",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - method: get\n",
        "mesh.yaml:6: services[0].routes[0].matches[0].method: expected one of GET, HEAD, POST",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - headers:\n              - {name: 'x y', value: v}\n",
        'mesh.yaml:7: services[0].routes[0].matches[0].headers[0].name: "x y"'
        " is not a valid header name",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - headers:\n              - {name: x}\n",
        'mesh.yaml:7: services[0].routes[0].matches[0].headers[0]: missing required field "value"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        matches:\n"
        "          - queryParams: []\n",
        "mesh.yaml:6: services[0].routes[0].matches[0].queryParams: unknown"
        " field (known: path, method, headers)",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        retryable: yes please\n",
        'mesh.yaml:5: services[0].routes[0].retryable: expected true or false, got "yes please"',
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        retryable: false\n"
        "        retry: {codes: [503]}\n",
        "mesh.yaml:6: services[0].routes[0].retry: the route says retryable: false; drop one",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        retry: {codes: [700]}\n",
        "mesh.yaml:5: services[0].routes[0].retry.codes[0]: must be between 100 and 599, got 700",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n"
        "        retry: {grpcStatuses: [UNAVAILABLE, NOPE]}\n",
        "mesh.yaml:5: services[0].routes[0].retry.grpcStatuses[1]: unknown gRPC status 'NOPE'"
        " (one of OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND,"
        " ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED,"
        " OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED)",
    ),
    (
        "services:\n  - name: a\n    routes:\n      - name: r\n        timeout: 1s\n"
        "        timeouts: {request: 2s}\n",
        "mesh.yaml:6: services[0].routes[0].timeouts: give either timeout or timeouts",
    ),
    (
        "services:\n  - name: a\n    protocol: opaque\n    routes: [{name: r}]\n",
        "mesh.yaml:4: services[0].routes: an opaque (TCP) service has no HTTP routes",
    ),
    (
        "services:\n  - name: a\n    retryBudget:\n      retryRatio: lots\n",
        'mesh.yaml:4: services[0].retryBudget.retryRatio: expected a number, got "lots"',
    ),
    (
        "services:\n  - name: a\n    retryBudget:\n      ttl: 10\n",
        "mesh.yaml:4: services[0].retryBudget.ttl: expected a duration like"
        ' "500ms" or "2s", got "10"',
    ),
    (
        "services:\n  - name: a\n    backends:\n      - {name: b, weight: 1}\n",
        'mesh.yaml:4: services[0].backends[0].name: no service named "b" (services: a)',
    ),
    (
        "services:\n  - name: a\n    backends:\n      - {name: a, weight: 0}\n",
        "mesh.yaml:4: services[0].backends: at least one backend needs a weight above zero",
    ),
    (
        "services:\n  - name: a\n    backends:\n      - {name: a}\n",
        'mesh.yaml:4: services[0].backends[0]: missing required field "weight"',
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[expected for _, expected in BAD])
def test_bad_manifests_name_the_field_and_the_line(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    message = str(caught.value)
    assert any(line.startswith(expected) for line in message.splitlines()), message


def test_every_problem_is_reported_in_file_order() -> None:
    text = dedent(
        """\
        services:
          - name: a
            port: zero
          - name: b
            routes:
              - name: r
                timeout: soon
        """
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, source="conf/mesh.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        'conf/mesh.yaml:3: services[0].port: expected a whole number, got "zero"',
        'conf/mesh.yaml:7: services[1].routes[0].timeout: expected a duration like "500ms" or '
        '"2s", got "soon"',
    ]
    assert [problem.line for problem in caught.value.problems] == [3, 7]


def test_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_manifest(tmp_path / "absent.yaml")


# -- limits: what reading a manifest may cost, and bytes that are not text ----


def _laughs(levels: int = 9) -> str:
    """The "billion laughs": each level is nine aliases of the one before."""
    lines = ["services: []", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _single_problem(text: str | bytes) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert len(caught.value.problems) == 1, str(caught.value)
    return str(caught.value)


def test_billion_laughs_are_refused_with_the_line_where_the_limit_was_hit() -> None:
    started = time.monotonic()
    message = _single_problem(_laughs())
    assert message.startswith("mesh.yaml:7: aliases expand to more than 100000 values")
    assert time.monotonic() - started < 1.0


def test_many_uses_of_one_alias_are_refused_too() -> None:
    text = (
        "services: []\nx: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\ny: [" + ", ".join(["*a"] * 20000) + "]\n"
    )
    assert "aliases expand to more than" in _single_problem(text)


def test_a_few_aliases_are_fine() -> None:
    text = dedent(
        """\
        services:
          - name: a
            routes: &routes
              - {name: all, matches: [{path: {type: PathPrefix, value: /}}], timeout: 1s}
          - {name: b, routes: *routes}
        """
    )
    manifest = parse_manifest(text)
    assert [r.name for r in manifest.services["b"].profile.routes] == ["all"]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert _single_problem("services: &s [*s]\n") == (
        "mesh.yaml:1: alias *s refers to a node that contains it"
    )


def test_deep_nesting_is_refused_before_the_composer_recurses() -> None:
    # 40,000 levels crash libyaml's composer (a segfault), 20,000 take seconds.
    started = time.monotonic()
    message = _single_problem("services: " + "[" * 400_000 + "]" * 400_000)
    assert message == "mesh.yaml:1: nested deeper than 64 levels"
    assert time.monotonic() - started < 1.0


def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all() -> None:
    # /dev/zero never ends: the reader must stop one byte past the limit.
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        load_manifest("/dev/zero")
    assert (
        str(caught.value)
        == f"/dev/zero: the manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB"
    )
    assert time.monotonic() - started < 2.0


def test_text_that_is_too_large_is_refused() -> None:
    assert "larger than" in _single_problem(b" " * (MAX_MANIFEST_BYTES + 1))


def test_bytes_that_are_not_utf8_are_reported_by_line_and_column() -> None:
    text = b"services:\n  - name: a\n    port: 8\xff0\n"
    assert _single_problem(text) == "mesh.yaml:3: not UTF-8 text: byte 0xff at column 12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  - name: a\x00\n", "mesh.yaml:2: character U+0000 at column 12"),
        ("services: []\n\n# bell \x07\n", "mesh.yaml:3: character U+0007 at column 8"),
        ("services: []\n\x7f\n", "mesh.yaml:2: character U+007F at column 1"),
    ],
)
def test_control_characters_are_reported_by_line_and_column(text: str, expected: str) -> None:
    assert _single_problem(text).startswith(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999999999999999999h", 'must be at most 24h, got "99999999999999999999h"'),
        ("24h1ms", 'must be at most 24h, got "24h1ms"'),
        ("0.0000001ms", 'must be a whole number of milliseconds, got "0.0000001ms"'),
        ("1.5ms", 'must be a whole number of milliseconds, got "1.5ms"'),
        ("0ms", "must be longer than zero"),
        ("1" * 100 + "s", 'expected a duration like "500ms" or "2s", got "' + "1" * 63),
    ],
)
def test_durations_out_of_range_name_the_field(value: str, message: str) -> None:
    text = f"services:\n  - name: a\n    routes:\n      - name: r\n        timeout: {value}\n"
    assert _single_problem(text).startswith(
        f"mesh.yaml:5: services[0].routes[0].timeout: {message}"
    )


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("24h", 86_400_000),
        ("1.5s", 1500),
        ("0.001s", 1),
        ("1m0.5s", 60_500),
        ("1h1m1s1ms", 3_661_001),
    ],
)
def test_durations_are_exact_whole_milliseconds(text: str, milliseconds: int) -> None:
    assert duration_ms(text) == milliseconds


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("999.1.1.1:80", "'999.1.1.1' is not an IPv4 address"),
        ("1.2.3:80", "'1.2.3' is not an IPv4 address"),
        ("host with space:80", "'host with space' is not a host name"),
        ("a..b:80", "'a..b' is not a host name"),
        ("-a:80", "'-a' is not a host name"),
        ("[::zz]:80", "'::zz' is not an IPv6 address"),
        ("web:+80", "port '+80' is not a number"),
    ],
)
def test_endpoints_must_be_ip_addresses_or_host_names(address: str, message: str) -> None:
    text = f"services:\n  - name: a\n    endpoints: ['{address}']\n"
    assert _single_problem(text).startswith(
        f"mesh.yaml:3: services[0].endpoints[0]: bad address '{address}': {message}"
    )


@pytest.mark.parametrize(
    "address", ["localhost:80", "db.internal:5432", "10.0.0.1:1", "[::1]:8080"]
)
def test_good_endpoint_addresses_are_accepted(address: str) -> None:
    parse_manifest(f"services:\n  - name: a\n    endpoints: ['{address}']\n")
