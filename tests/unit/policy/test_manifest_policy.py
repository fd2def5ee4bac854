"""The manifest's `policy:` section: what it accepts, and every error with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.control.manifest import ManifestError, parse_manifest
from tulle.core.policy import EMPTY_POLICY, NetworkRule

SERVICES = "services: [{name: web, port: 8080}, {name: db, protocol: opaque}]\n"
POLICY_DOC = Path(__file__).resolve().parents[3] / "docs" / "policy.md"


def test_a_full_policy_is_converted() -> None:
    manifest = parse_manifest(
        SERVICES + "policy:\n"
        "  defaultPolicy: all-authenticated\n"
        "  workloads: [{name: web, defaultPolicy: audit, probePaths: [/ready]}]\n"
        "  servers: [{name: web-http, workload: web, port: 8080, protocol: grpc}]\n"
        "  authentications:\n"
        "    - {name: ids, identities: ['spiffe://tulle.local/ns/*/sa/web', '*']}\n"
        "    - name: nets\n"
        "      networks: [127.0.0.1/32, {cidr: '10.0.0.0/8', except: [10.1.0.0/16]}]\n"
        "    - {name: anyone, unauthenticated: true}\n"
        "  httpRoutes: [{name: r, server: web-http, matches: [{path: {value: /x}}]}]\n"
        "  authorizationPolicies:\n"
        "    - {name: p, target: {httpRoute: r}, requiredAuthentications: [ids, nets]}\n"
    )
    spec = manifest.authorization
    assert spec.default_mode == "all-authenticated"
    assert spec.workloads[0].default_mode == "audit"
    assert spec.servers[0].protocol == "grpc"
    assert spec.authentications[1].networks == (
        NetworkRule("127.0.0.1/32"),
        NetworkRule("10.0.0.0/8", ("10.1.0.0/16",)),
    )
    assert spec.authorization_policies[0].required == ("ids", "nets")
    assert spec.authorization_policies[0].target_route == "r"
    assert spec.http_routes[0].matches[0].path_prefix == "/x"


def test_no_policy_section_means_the_open_mesh_default() -> None:
    assert parse_manifest(SERVICES).authorization == EMPTY_POLICY
    assert parse_manifest(SERVICES + "policy: {}\n").authorization == EMPTY_POLICY
    assert EMPTY_POLICY.compile("web", 8080).default_mode == "all-unauthenticated"


def documented_example() -> str:
    text = POLICY_DOC.read_text()
    return text.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_example_is_valid_and_means_what_it_says() -> None:
    spec = parse_manifest(documented_example(), source="docs/policy.md").authorization
    web = spec.compile("web", 8080)
    frontend = "spiffe://tulle.local/ns/default/sa/frontend"
    web_id = "spiffe://tulle.local/ns/default/sa/web"
    assert web.authorize_http(None, "192.0.2.1", b"GET", b"/health", lambda n: None).allowed
    assert web.authorize_http(frontend, "192.0.2.1", b"POST", b"/admin", lambda n: None).allowed
    assert not web.authorize_http(web_id, "192.0.2.1", b"POST", b"/admin", lambda n: None).allowed
    assert web.authorize_http(web_id, "10.0.0.1", b"POST", b"/admin", lambda n: None).allowed
    assert web.authorize_http(None, "127.0.0.1", b"GET", b"/ready", lambda n: None).allowed
    db = spec.compile("db", 5432)
    assert db.authorize_tcp(web_id, "192.0.2.1").allowed
    assert not db.authorize_tcp(frontend, "192.0.2.1").allowed
    assert spec.compile("frontend", 80).default_mode == "all-authenticated"


BAD = [
    (
        "policy:\n  defaultPolicy: allow\n",
        "mesh.yaml:3: policy.defaultPolicy: expected one of all-unauthenticated, "
        'all-authenticated, deny, audit, got "allow"',
    ),
    (
        "policy:\n  server: []\n",
        "mesh.yaml:3: policy.server: unknown field (known: defaultPolicy, workloads, servers, "
        'authentications, httpRoutes, authorizationPolicies, rateLimits); did you mean "servers"?',
    ),
    (
        "policy:\n  servers: [{name: s, workload: api}]\n",
        'mesh.yaml:3: policy.servers[0].workload: no service named "api" (services: db, web)',
    ),
    (
        "policy:\n  servers:\n    - {name: s, workload: web, port: 99999}\n",
        "mesh.yaml:4: policy.servers[0].port: must be between 1 and 65535, got 99999",
    ),
    (
        "policy:\n  servers:\n    - {name: a, workload: web}\n    - {name: b, workload: web}\n",
        'mesh.yaml:5: policy.servers: servers "a" and "b" both select every port of workload "web"',
    ),
    (
        "policy:\n  servers:\n    - {name: a, workload: web}\n"
        "    - {name: a, workload: web, port: 1}\n",
        'mesh.yaml:5: policy.servers[1].name: duplicate name "a" (first on line 4)',
    ),
    (
        "policy:\n  servers: [{name: d, workload: db}]\n",
        'mesh.yaml:3: policy.servers: server "d": workload "db" is opaque; give the server '
        "protocol: opaque",
    ),
    (
        "policy:\n  servers: [{name: s, workload: web, probePaths: [healthz]}]\n",
        'mesh.yaml:3: policy.servers[0].probePaths[0]: a path starts with "/", got "healthz"',
    ),
    (
        "policy:\n  authentications:\n    - {name: x}\n",
        "mesh.yaml:4: policy.authentications[0]: give exactly one of identities, networks, jwt or "
        "unauthenticated: true",
    ),
    (
        "policy:\n  authentications:\n    - {name: x, identities: [a], networks: [10.0.0.0/8]}\n",
        "mesh.yaml:4: policy.authentications[0]: give exactly one of identities, networks, jwt or "
        "unauthenticated: true (got identities, networks)",
    ),
    (
        "policy:\n  authentications:\n    - name: x\n      identities:\n        - web\n",
        "mesh.yaml:6: policy.authentications[0].identities[0]: expected a SPIFFE ID like",
    ),
    (
        "policy:\n  authentications:\n    - name: x\n      networks: [10.0.0.1/8]\n",
        "mesh.yaml:5: policy.authentications[0].networks[0]: bad network: 10.0.0.1/8 has host "
        "bits set",
    ),
    (
        "policy:\n  authentications:\n    - {name: x, unauthenticated: false}\n",
        "mesh.yaml:4: policy.authentications[0].unauthenticated: only `unauthenticated: true` "
        "means something",
    ),
    (
        "policy:\n  httpRoutes:\n    - {name: r, server: nope}\n",
        'mesh.yaml:4: policy.httpRoutes[0].server: no server named "nope" (servers: none)',
    ),
    (
        "policy:\n  servers: [{name: d, workload: db, protocol: opaque}]\n"
        "  httpRoutes:\n    - {name: r, server: d}\n",
        'mesh.yaml:5: policy.httpRoutes[0].server: server "d" is opaque (TCP): it has no HTTP '
        "routes",
    ),
    (
        "policy:\n  servers: [{name: s, workload: web}]\n  httpRoutes:\n"
        "    - name: r\n      server: s\n      matches: [{path: {value: x}}]\n",
        'mesh.yaml:7: policy.httpRoutes[0].matches[0].path.value: a path starts with "/"',
    ),
    (
        "policy:\n  servers: [{name: s, workload: web}]\n  authorizationPolicies:\n"
        "    - {name: p, target: {server: s}, requiredAuthentications: [ghost]}\n",
        "mesh.yaml:5: policy.authorizationPolicies[0].requiredAuthentications[0]: no "
        'authentication named "ghost" (authentications: none)',
    ),
    (
        "policy:\n  servers: [{name: s, workload: web}]\n  authorizationPolicies:\n"
        "    - {name: p, target: {server: s, httpRoute: r}, requiredAuthentications: [x]}\n",
        "mesh.yaml:5: policy.authorizationPolicies[0].target: give exactly one of server or "
        "httpRoute",
    ),
    (
        "policy:\n  servers: [{name: s, workload: web}]\n  authorizationPolicies:\n"
        "    - name: p\n      target: {server: s}\n      requiredAuthentications: []\n",
        "mesh.yaml:7: policy.authorizationPolicies[0].requiredAuthentications: the list is empty",
    ),
    (
        "policy:\n  authorizationPolicies:\n    - {name: p, target: {httpRoute: r}}\n",
        "mesh.yaml:4: policy.authorizationPolicies[0]: missing required field "
        '"requiredAuthentications"',
    ),
    (
        "policy:\n  workloads: [{name: web, defaultPolicy: open}]\n",
        "mesh.yaml:3: policy.workloads[0].defaultPolicy: expected one of",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD)
def test_errors_name_the_field_and_the_line(body: str, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(SERVICES + body)
    messages = [str(p) for p in caught.value.problems]
    assert any(m.startswith(expected) for m in messages), messages


def test_every_problem_is_reported_in_one_pass() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(
            SERVICES + "policy:\n  defaultPolicy: x\n  servers: [{name: s, workload: nope}]\n"
            "  authentications: [{name: a}]\n"
        )
    assert [p.line for p in caught.value.problems] == [3, 4, 5]
