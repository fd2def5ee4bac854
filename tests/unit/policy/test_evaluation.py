"""InboundPolicy decisions over a matrix of callers, policies and requests."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.control.manifest import parse_manifest
from tulle.core.policy import (
    FAIL_CLOSED,
    NO_POLICY_NAME,
    Authentication,
    Authorization,
    HeaderLookup,
    InboundPolicy,
    NetworkRule,
    fail_closed,
    identity_pattern,
)

A = "spiffe://tulle.local/ns/default/sa/a"
B = "spiffe://tulle.local/ns/default/sa/b"
OTHER_NS = "spiffe://tulle.local/ns/prod/sa/a"
LOCAL = "127.0.0.1"
LAN = "10.1.2.3"
FAR = "192.0.2.7"


def no_headers(name: bytes) -> bytes | None:
    return None


def headers(**values: str) -> HeaderLookup:
    table = {k.replace("_", "-").encode(): v.encode() for k, v in values.items()}
    return table.get


def compile_policy(body: str, workload: str = "web", port: int = 8080) -> InboundPolicy:
    text = "services: [{name: web, port: 8080}, {name: db, protocol: opaque}]\npolicy:\n"
    return parse_manifest(text + body).authorization.compile(workload, port)


AUTHENTICATIONS = """
  authentications:
    - {name: only-a, identities: ["spiffe://tulle.local/ns/default/sa/a"]}
    - {name: default-ns, identities: ["spiffe://tulle.local/ns/default/sa/*"]}
    - {name: lan, networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]}
    - {name: anyone, unauthenticated: true}
"""


def server_policy(*required: str, default: str | None = None) -> InboundPolicy:
    server_default = f", defaultPolicy: {default}" if default else ""
    grant = (
        "  authorizationPolicies:\n"
        f"    - {{name: grant, target: {{server: web-http}}, "
        f"requiredAuthentications: [{', '.join(required)}]}}\n"
        if required
        else ""
    )
    return compile_policy(
        f"  servers: [{{name: web-http, workload: web, port: 8080{server_default}}}]\n"
        + AUTHENTICATIONS
        + grant
    )


CALLERS = {"A": (A, LOCAL), "B": (B, LOCAL), "none": (None, LOCAL), "other-ns": (OTHER_NS, LOCAL)}

# policy -> caller -> allowed
MATRIX = {
    ("only-a",): {"A": True, "B": False, "none": False, "other-ns": False},
    ("default-ns",): {"A": True, "B": True, "none": False, "other-ns": False},
    ("anyone",): {"A": True, "B": True, "none": True, "other-ns": True},
    ("only-a", "default-ns"): {"A": True, "B": False, "none": False, "other-ns": False},
    (): {"A": False, "B": False, "none": False, "other-ns": False},
}


@pytest.mark.parametrize("required", list(MATRIX))
@pytest.mark.parametrize("caller", list(CALLERS))
def test_identity_matrix(required: tuple[str, ...], caller: str) -> None:
    policy = server_policy(*required)
    client_id, ip = CALLERS[caller]
    expected = MATRIX[required][caller]
    for decision in (
        policy.authorize_http(client_id, ip, b"GET", b"/", no_headers),
        policy.authorize_tcp(client_id, ip),
    ):
        assert decision.allowed is expected
        assert decision.server == "web-http"
        assert decision.policy == ("grant" if expected else "default:deny")
        assert decision.audit_denied is False


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [(LAN, True), ("10.9.0.5", False), (FAR, False), ("::ffff:10.1.2.3", True), ("junk", False)],
)
def test_networks_with_exceptions(ip: str, allowed: bool) -> None:
    policy = server_policy("lan")
    assert policy.authorize_tcp(None, ip).allowed is allowed
    assert policy.authorize_http(A, ip, b"GET", b"/", no_headers).allowed is allowed


def test_all_required_authentications_must_hold() -> None:
    policy = server_policy("default-ns", "lan")
    assert policy.authorize_tcp(A, LAN).allowed
    assert not policy.authorize_tcp(A, FAR).allowed  # identity without network
    assert not policy.authorize_tcp(None, LAN).allowed  # network without identity


ROUTES = """
  servers: [{name: web-http, workload: web, port: 8080}]
  httpRoutes:
    - name: health
      server: web-http
      matches: [{path: {type: Exact, value: /health}, method: GET}]
    - name: admin
      server: web-http
      matches: [{path: {value: /admin}, method: POST}]
    - name: beta
      server: web-http
      matches: [{headers: [{name: X-Beta, value: "on|yes", type: RegularExpression}]}]
  authorizationPolicies:
    - {name: health-open, target: {httpRoute: health}, requiredAuthentications: [anyone]}
    - {name: admin-a, target: {httpRoute: admin}, requiredAuthentications: [only-a]}
    - {name: beta-b, target: {httpRoute: beta}, requiredAuthentications: [default-ns]}
    - {name: lan-all, target: {server: web-http}, requiredAuthentications: [lan]}
"""


@pytest.mark.parametrize(
    ("client_id", "ip", "method", "path", "allowed", "policy", "route"),
    [
        (None, FAR, b"GET", b"/health", True, "health-open", "health"),
        (None, FAR, b"GET", b"/health?verbose=1", True, "health-open", "health"),
        (None, FAR, b"POST", b"/health", False, "default:deny", ""),
        (None, FAR, b"GET", b"/health/x", False, "default:deny", ""),
        (A, FAR, b"POST", b"/admin", True, "admin-a", "admin"),
        (A, FAR, b"POST", b"/admin/users", True, "admin-a", "admin"),
        (A, FAR, b"POST", b"/administrator", False, "default:deny", ""),
        (B, FAR, b"POST", b"/admin", False, "default:deny", "admin"),
        (None, FAR, b"POST", b"/admin", False, "default:deny", "admin"),
        # Server-level grants apply to routes too.
        (None, LAN, b"POST", b"/admin", True, "lan-all", "admin"),
        (None, LAN, b"GET", b"/anything", True, "lan-all", ""),
    ],
)
def test_route_level_authorization(
    client_id: str | None,
    ip: str,
    method: bytes,
    path: bytes,
    allowed: bool,
    policy: str,
    route: str,
) -> None:
    compiled = compile_policy(ROUTES + AUTHENTICATIONS)
    decision = compiled.authorize_http(client_id, ip, method, path, no_headers)
    assert (decision.allowed, decision.policy, decision.route) == (allowed, policy, route)


def test_header_matches() -> None:
    compiled = compile_policy(ROUTES + AUTHENTICATIONS)
    assert compiled.authorize_http(B, FAR, b"GET", b"/x", headers(x_beta="yes")).allowed
    assert not compiled.authorize_http(B, FAR, b"GET", b"/x", headers(x_beta="no")).allowed
    assert not compiled.authorize_http(B, FAR, b"GET", b"/x", no_headers).allowed
    # Routes do not apply to connections: only server-level grants do.
    assert not compiled.authorize_tcp(A, FAR).allowed


@pytest.mark.parametrize(
    ("mode", "with_id", "without_id"),
    [
        ("all-unauthenticated", True, True),
        ("all-authenticated", True, False),
        ("deny", False, False),
        ("audit", True, True),
    ],
)
def test_default_modes_without_a_server(mode: str, with_id: bool, without_id: bool) -> None:
    policy = compile_policy(f"  defaultPolicy: {mode}\n")
    assert policy.server == ""
    for client_id, expected in ((A, with_id), (None, without_id)):
        decision = policy.authorize_http(client_id, FAR, b"GET", b"/", no_headers)
        assert decision.allowed is expected
        assert decision.policy == f"default:{mode}"
        assert decision.audit_denied is (mode == "audit")
        assert policy.authorize_tcp(client_id, FAR).allowed is expected


def test_the_workload_default_beats_the_mesh_default() -> None:
    policy = compile_policy(
        "  defaultPolicy: deny\n  workloads: [{name: web, defaultPolicy: audit}]\n"
    )
    assert policy.default_mode == "audit"
    other = compile_policy("  defaultPolicy: deny\n  workloads: [{name: web}]\n")
    assert other.default_mode == "deny"


def test_audit_flags_only_what_would_be_denied() -> None:
    policy = server_policy("only-a", default="audit")
    granted = policy.authorize_http(A, FAR, b"GET", b"/", no_headers)
    assert (granted.allowed, granted.audit_denied, granted.policy) == (True, False, "grant")
    audited = policy.authorize_http(B, FAR, b"GET", b"/", no_headers)
    assert (audited.allowed, audited.audit_denied, audited.policy) == (True, True, "default:audit")


def test_a_server_without_a_default_denies_even_in_an_open_mesh() -> None:
    policy = compile_policy(
        "  defaultPolicy: all-unauthenticated\n"
        "  servers: [{name: web-http, workload: web, port: 8080}]\n"
    )
    assert not policy.authorize_tcp(A, LOCAL).allowed


def test_a_server_for_every_port_and_a_specific_one() -> None:
    body = (
        "  servers:\n"
        "    - {name: web-any, workload: web, defaultPolicy: all-authenticated}\n"
        "    - {name: web-metrics, workload: web, port: 9100, defaultPolicy: deny}\n"
    )
    assert compile_policy(body, port=8080).server == "web-any"
    assert compile_policy(body, port=9100).server == "web-metrics"
    assert compile_policy(body, workload="db", port=1).server == ""


PROBES = """
  workloads: [{name: web, probePaths: [/ready]}]
  servers: [{name: web-http, workload: web, port: 8080, probePaths: [/healthz]}]
"""


@pytest.mark.parametrize(
    ("client_id", "ip", "method", "path", "allowed"),
    [
        (None, "127.0.0.1", b"GET", b"/healthz", True),
        (None, "127.0.0.1", b"GET", b"/ready", True),
        (None, "::1", b"HEAD", b"/healthz?full=1", True),
        (None, "127.0.0.1", b"POST", b"/healthz", False),
        (None, "127.0.0.1", b"GET", b"/healthz/x", False),
        (None, FAR, b"GET", b"/healthz", False),  # not the app's own host
        (A, "127.0.0.1", b"GET", b"/healthz", False),  # a meshed caller is no probe
    ],
)
def test_probe_paths_survive_deny(
    client_id: str | None, ip: str, method: bytes, path: bytes, allowed: bool
) -> None:
    policy = compile_policy(PROBES)
    decision = policy.authorize_http(client_id, ip, method, path, no_headers)
    assert decision.allowed is allowed
    assert decision.policy == ("probe" if allowed else "default:deny")


def test_fail_closed_denies_everything_and_says_why() -> None:
    for policy in (FAIL_CLOSED, fail_closed("web", 8080)):
        assert policy.known is False
        for decision in (
            policy.authorize_http(A, LOCAL, b"GET", b"/", no_headers),
            policy.authorize_http(None, LOCAL, b"GET", b"/healthz", no_headers),
            policy.authorize_tcp(None, LOCAL),
        ):
            assert not decision.allowed
            assert decision.policy == NO_POLICY_NAME


def test_an_authorization_that_requires_nothing_grants_nothing() -> None:
    policy = InboundPolicy(
        "web", 80, server="s", default_mode="deny", authorizations=(Authorization("empty", ()),)
    )
    assert not policy.authorize_tcp(A, LOCAL).allowed


def test_policies_compare_by_specification_not_by_cache() -> None:
    one, two = server_policy("only-a"), server_policy("only-a")
    one.authorize_tcp(A, LOCAL)
    assert one == two
    assert one != server_policy("lan")


def test_the_client_cache_is_bounded() -> None:
    policy = server_policy("lan")
    for i in range(5000):
        policy.authorize_tcp(None, f"10.{i // 256}.{i % 256}.1")
    assert len(policy._masks) <= 4096
    assert policy.authorize_tcp(None, LAN).allowed


SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)


@given(namespace=SEGMENT, account=SEGMENT)
def test_a_wildcard_matches_exactly_one_segment(namespace: str, account: str) -> None:
    pattern = identity_pattern("spiffe://tulle.local/ns/*/sa/web")
    assert pattern.fullmatch(f"spiffe://tulle.local/ns/{namespace}/sa/web")
    assert not pattern.fullmatch(f"spiffe://tulle.local/ns/{namespace}/x/sa/web")
    assert not pattern.fullmatch(f"spiffe://tulle.local/ns/{namespace}/sa/{account}x-web")
    assert identity_pattern("*").fullmatch(f"spiffe://any/{namespace}")


@given(
    address=st.ip_addresses(v=4),
    prefix=st.integers(min_value=0, max_value=32),
    client_id=st.one_of(st.none(), st.just(A)),
)
def test_networks_agree_with_ipaddress(
    address: ipaddress.IPv4Address, prefix: int, client_id: str | None
) -> None:
    network = ipaddress.ip_network(f"10.0.0.0/{prefix}", strict=False)
    policy = InboundPolicy(
        "web",
        80,
        server="s",
        default_mode="deny",
        authorizations=(
            Authorization("net", (Authentication("n", networks=(NetworkRule(str(network)),)),)),
        ),
    )
    expected = address in network
    assert policy.authorize_tcp(client_id, str(address)).allowed is expected
    assert (
        policy.authorize_http(client_id, str(address), b"GET", b"/", no_headers).allowed is expected
    )


PATH_SEGMENT = st.text(alphabet="abcx-", min_size=1, max_size=4)
PATHS = st.lists(PATH_SEGMENT, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(prefix=PATHS, path=PATHS, trailing=st.booleans())
def test_prefixes_match_whole_segments(prefix: str, path: str, trailing: bool) -> None:
    written = prefix + "/" if trailing and prefix != "/" else prefix
    policy = compile_policy(
        "  servers: [{name: web-http, workload: web, port: 8080}]\n"
        "  authentications: [{name: anyone, unauthenticated: true}]\n"
        "  httpRoutes:\n"
        f"    - {{name: r, server: web-http, matches: [{{path: {{value: '{written}'}}}}]}}\n"
        "  authorizationPolicies:\n"
        "    - {name: p, target: {httpRoute: r}, requiredAuthentications: [anyone]}\n"
    )
    base = prefix.rstrip("/")
    expected = base == "" or path == base or path.startswith(base + "/")
    decision = policy.authorize_http(None, FAR, b"GET", path.encode(), no_headers)
    assert decision.allowed is expected
    assert decision.route == ("r" if expected else "")
