"""`POST /api/apply` logic (merge, validation with lines, atomic write) and target parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.control.manifest import load_manifest
from tulle.core.scrape import ScrapeTarget
from tulle.viz.apply import apply_manifest
from tulle.viz.targets import TargetError, TargetSource, parse_targets

CURRENT = """\
services:
  - name: books
    endpoints: [127.0.0.1:9001]
    routes:
      - name: slow
        matches: [{path: {value: /delay}}]
        timeout: 5s
  - name: web
    endpoints: [127.0.0.1:9002]
"""


def test_fragment_is_merged_validated_and_written(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(CURRENT)
    fragment = b"""\
services:
  - name: books
    routes:
      - name: slow
        matches: [{path: {value: /delay}}]
        timeout: 100ms
"""
    result = apply_manifest(fragment, manifest)
    assert result.ok, result.problems
    assert result.changed == ["books"]
    loaded = load_manifest(manifest)
    assert loaded.services["books"].profile.routes[0].timeout_s == pytest.approx(0.1)
    assert [str(e.address[1]) for e in loaded.services["books"].endpoints] == ["9001"]
    assert "web" in loaded.services


def test_broken_fragment_is_refused_with_field_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(CURRENT)
    fragment = b"""\
services:
  - name: books
    routes:
      - name: slow
        matches: [{path: {value: /delay}}]
        timeout: fast
"""
    result = apply_manifest(fragment, manifest, source="fix.yaml")
    assert not result.ok
    problem = result.problems[0]
    assert problem.field == "services[0].routes[0].timeout"
    assert problem.line == 6
    assert str(problem).startswith("fix.yaml:6: services[0].routes[0].timeout:")
    assert manifest.read_text() == CURRENT


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(CURRENT)
    result = apply_manifest(b"services:\n  - name: [unclosed\n", manifest)
    assert not result.ok
    assert result.problems[0].line is not None


def test_replace_mode_validates_the_whole_document(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(CURRENT)
    assert not apply_manifest(
        b"services:\n  - name: x\n    port: nope\n", manifest, mode="replace"
    ).ok
    result = apply_manifest(b"services:\n  - name: only\n", manifest, mode="replace")
    assert result.ok
    assert list(load_manifest(manifest).services) == ["only"]


def test_targets_from_lines_and_json() -> None:
    expected = [
        ScrapeTarget("web", "web-0", "127.0.0.1:4191"),
        ScrapeTarget("books", "127.0.0.1:4192", "127.0.0.1:4192"),
    ]
    assert parse_targets("web=web-0=127.0.0.1:4191\n# comment\nbooks=127.0.0.1:4192\n") == expected
    json_text = (
        '{"targets": [{"service": "web", "instance": "web-0", "admin": "127.0.0.1:4191"},'
        ' "books=127.0.0.1:4192"]}'
    )
    assert parse_targets(json_text) == expected
    with pytest.raises(TargetError, match="targets:1"):
        parse_targets("web=web-0=nowhere")


def test_target_file_is_reread_and_survives_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("web=web-0=127.0.0.1:4191\n")
    source = TargetSource(str(path))
    assert [t.instance for t in source.current()] == ["web-0"]
    path.write_text("web=web-0=127.0.0.1:4191\nbooks=books-0=127.0.0.1:4192\n")
    assert [t.instance for t in source.current()] == ["books-0", "web-0"]
    path.write_text("broken=\n")
    assert [t.instance for t in source.current()] == ["books-0", "web-0"]
    assert source.error
    assert TargetSource("a=a-0=127.0.0.1:1,b=b-0=127.0.0.1:2").current()[0].service == "a"


def test_targets_from_a_tulle_up_state_file() -> None:
    state = (
        '{"control": {"http": "http://127.0.0.1:1/"},'
        ' "ingress": {"addr": "127.0.0.1:2", "admin": "127.0.0.1:3"},'
        ' "instances": [{"name": "web-0", "service": "web", "admin": "127.0.0.1:4"}]}'
    )
    assert parse_targets(state, "state.json") == [
        ScrapeTarget("web", "web-0", "127.0.0.1:4"),
        ScrapeTarget("ingress", "ingress", "127.0.0.1:3"),
    ]


POLICY = """\
services:
  - name: books
    endpoints: [127.0.0.1:9001]
  - name: web
    endpoints: [127.0.0.1:9002]
policy:
  defaultPolicy: deny
  servers:
    - {name: books-http, workload: books, port: 9001}
  authorizationPolicies:
    - name: web-reads-books
      target: {server: books-http}
      requiredAuthentications: [loopback]
  authentications:
    - {name: loopback, networks: [{cidr: 127.0.0.0/8}]}
"""


@pytest.mark.parametrize(
    "fragment",
    [
        b"services: []\npolicy: {}\n",
        b"services: []\n",
        b"policy: {}\n",
        b"{services: [], policy: }\n",
    ],
)
def test_an_empty_merge_changes_nothing(tmp_path: Path, fragment: bytes) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY)
    before = load_manifest(manifest)
    result = apply_manifest(fragment, manifest)
    assert result.ok, result.problems
    assert (result.changed, result.added) == ([], [])
    after = load_manifest(manifest)
    assert after.authorization == before.authorization
    assert after.authorization.default_mode == "deny"
    assert set(after.services) == {"books", "web"}


def test_policy_items_merge_by_name_and_keep_the_others(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY)
    fragment = b"""\
policy:
  servers:
    - {name: web-http, workload: web, port: 9002}
  authentications:
    - {name: loopback, networks: [{cidr: 127.0.0.1/32}]}
"""
    result = apply_manifest(fragment, manifest)
    assert result.ok, result.problems
    assert result.changed == ["policy.authentications/loopback"]
    assert result.added == ["policy.servers/web-http"]
    policy = load_manifest(manifest).authorization
    assert [s.name for s in policy.servers] == ["books-http", "web-http"]
    assert [p.name for p in policy.authorization_policies] == ["web-reads-books"]
    assert policy.default_mode == "deny"


def test_default_policy_is_replaced_only_when_named(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY)
    result = apply_manifest(b"policy: {defaultPolicy: all-authenticated}\n", manifest)
    assert result.ok, result.problems
    assert result.changed == ["policy.defaultPolicy"]
    policy = load_manifest(manifest).authorization
    assert policy.default_mode == "all-authenticated"
    assert [s.name for s in policy.servers] == ["books-http"]


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        (b"ingress: {port: 1}\n", "a merge changes `services` and `policy` only; `ingress`"),
        (b"services: {name: x}\n", "expected a list"),
        (b"services: [3]\n", "each service needs a `name:`"),
        (b"[1, 2]\n", "expected a mapping with `services:` and/or `policy:`"),
        (b"", "expected a mapping with `services:` and/or `policy:`"),
    ],
)
def test_what_a_merge_cannot_express_is_refused(
    tmp_path: Path, fragment: bytes, message: str
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY)
    result = apply_manifest(fragment, manifest)
    assert not result.ok
    assert message in result.problems[0].message
    assert manifest.read_text() == POLICY


def test_apply_has_the_manifest_readers_bounds(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(POLICY)
    lines = ["services: []", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    result = apply_manifest("\n".join(lines).encode(), manifest, source="laughs.yaml")
    assert not result.ok
    assert str(result.problems[0]).startswith("laughs.yaml:7: aliases expand to more than")
    assert manifest.read_text() == POLICY
