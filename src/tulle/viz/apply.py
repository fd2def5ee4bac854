"""`POST /api/apply`: change a running mesh's manifest (routes, splits, timeouts, retries,
authorization policy).

The body is YAML (or JSON): a whole manifest (`?mode=replace`) or, by
default, a fragment merged into the current one. A merge changes exactly what
the fragment names and never drops what it does not (docs/api.md):

- `services`: merged by `name`: each top-level field a fragment service gives
  replaces that field of the service of the same name (so `routes:` replaces
  the whole route list); a new name adds a service. Services the fragment does
  not name are kept; `services: []` changes nothing.
- `policy`: `defaultPolicy` replaces the mesh default when given; each list
  (`workloads`, `servers`, `authentications`, `httpRoutes`,
  `authorizationPolicies`) is merged by `name`: a named item replaces the
  item of that name whole, a new name is added, the others are kept;
  `policy: {}` changes nothing.
- Any other top-level field is refused: a merge cannot express it; removing a
  service or a policy item takes `?mode=replace`.

The result is validated with the manifest validator; problems are reported
against the *sent* document (its field path and line, found by walking the
fragment's YAML nodes) and nothing is written. A valid result replaces the
control plane's manifest file atomically (write + rename), and the control
plane's file watcher streams it to the proxies. Reading the body and the
current file has the manifest reader's bounds (size, nesting, aliases, time).

A merged manifest is written back as plain YAML: comments of the file are not
kept. `tulle up` generates the file it gives the control plane, so that is the
file this rewrites; a hand-written mesh.yaml is better edited by hand.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tulle.control.manifest import ManifestError, Problem, load_document, read_manifest_bytes
from tulle.local.manifest import parse_local_manifest

MAX_APPLY_BYTES = 1024 * 1024
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(slots=True)
class ApplyResult:
    ok: bool
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    manifest: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "added": self.added,
            "manifest": self.manifest,
            "problems": [
                {
                    "source": p.source,
                    "line": p.line,
                    "field": p.field,
                    "message": p.message,
                    "text": str(p),
                }
                for p in self.problems
            ],
        }


def _refused(source: str, message: str, line: int | None = None, path: str = "") -> ApplyResult:
    return ApplyResult(False, problems=[Problem(source, line, path, message)])


def line_of(root: Node | None, path: str) -> int | None:
    """The line of the deepest node of `path` (`services[1].routes[0].timeout`) under `root`."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for name, index in _TOKEN.findall(path):
        if isinstance(node, MappingNode) and name:
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.value == name:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, SequenceNode) and index:
            position = int(index)
            if position >= len(node.value):
                return line
            node = node.value[position]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _services(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict) and isinstance(document.get("services"), list):
        return [s for s in document["services"] if isinstance(s, dict)]
    return []


MERGEABLE = ("services", "policy")
# The policy lists merged item by item, by each item's `name`.
POLICY_LISTS = ("workloads", "servers", "authentications", "httpRoutes", "authorizationPolicies")


def _merge_named(
    current: Any, fragment: list[Any], label: str, changed: list[str], added: list[str]
) -> list[Any]:
    """`current` (a list of named mappings) with the fragment's items replacing by name."""
    merged = list(current) if isinstance(current, list) else []
    index = {
        str(item.get("name")): position
        for position, item in enumerate(merged)
        if isinstance(item, dict) and "name" in item
    }
    for item in fragment:
        name = item.get("name") if isinstance(item, dict) else None
        if name is not None and str(name) in index:
            merged[index[str(name)]] = item
            changed.append(f"{label}/{name}")
        else:
            if name is not None:
                index[str(name)] = len(merged)
            merged.append(item)
            added.append(f"{label}/{name}")
    return merged


def merge_policy(current: Any, fragment: dict[str, Any]) -> tuple[Any, list[str], list[str]]:
    """The current `policy:` with the fragment's merged in; (merged, changed, added)."""
    merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    changed: list[str] = []
    added: list[str] = []
    for key, value in fragment.items():
        if key in POLICY_LISTS and isinstance(value, list):
            merged[key] = _merge_named(merged.get(key), value, key, changed, added)
        else:
            # A scalar (defaultPolicy), or a shape validation will name.
            (changed if key in merged else added).append(str(key))
            merged[key] = value
    return merged, changed, added


def merge(
    current: dict[str, Any], fragment: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The current manifest with the fragment merged in; (merged, changed, added).

    Service names are reported as they are; policy items as `policy.SECTION/NAME`.
    """
    merged_services = [dict(service) for service in _services(current)]
    by_name = {str(service.get("name")): service for service in merged_services}
    changed: list[str] = []
    added: list[str] = []
    for service in _services(fragment):
        name = str(service.get("name"))
        existing = by_name.get(name)
        if existing is None:
            copy = dict(service)
            merged_services.append(copy)
            by_name[name] = copy
            added.append(name)
        else:
            existing.update(service)
            changed.append(name)
    merged = dict(current)
    merged["services"] = merged_services
    policy = fragment.get("policy")
    if isinstance(policy, dict) and policy:
        merged["policy"], policy_changed, policy_added = merge_policy(current.get("policy"), policy)
        changed += [f"policy.{name}" for name in policy_changed]
        added += [f"policy.{name}" for name in policy_added]
    return merged, changed, added


def _remap(
    problem: Problem,
    merged: dict[str, Any],
    fragment: dict[str, Any],
    root: Node | None,
    source: str,
) -> Problem:
    """A problem of the merged document, pointed at the fragment the user sent."""
    match = re.match(r"services\[(\d+)\](.*)", problem.field)
    if match is None:
        return Problem(
            source,
            line_of(root, problem.field) if problem.field else None,
            problem.field,
            problem.message,
        )
    services = merged.get("services", [])
    index = int(match.group(1))
    name = (
        services[index].get("name")
        if index < len(services) and isinstance(services[index], dict)
        else None
    )
    names = [str(s.get("name")) for s in _services(fragment)]
    if name is not None and str(name) in names:
        path = f"services[{names.index(str(name))}]{match.group(2)}"
        return Problem(source, line_of(root, path), path, problem.message)
    return Problem(source, None, f"(service {name}) {problem.field}", problem.message)


def write_atomically(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def apply_manifest(
    body: bytes, manifest_path: Path, *, mode: str = "merge", source: str = "<apply>"
) -> ApplyResult:
    """Validate `body` (merged into, or replacing, the manifest file) and write it on success."""
    if len(body) > MAX_APPLY_BYTES:
        return _refused(source, f"the document is larger than {MAX_APPLY_BYTES} bytes")
    if mode not in ("merge", "replace"):
        return _refused(source, f"mode must be merge or replace, got {mode!r}")
    try:
        root, fragment = load_document(body, source)
    except ManifestError as exc:
        return ApplyResult(False, problems=exc.problems)
    if mode == "replace":
        try:
            # The whole document, `tulle up`'s fields too: the file may be what it runs.
            manifest = parse_local_manifest(body, source=source).mesh
        except ManifestError as exc:
            return ApplyResult(False, problems=exc.problems)
        write_atomically(manifest_path, body.decode("utf-8"))
        return ApplyResult(True, changed=sorted(manifest.services), manifest=str(manifest_path))
    if not isinstance(fragment, dict) or not fragment:
        return _refused(
            source, "expected a mapping with `services:` and/or `policy:`", line_of(root, "")
        )
    for key in fragment:
        if key not in MERGEABLE:
            return _refused(
                source,
                f"a merge changes `services` and `policy` only; `{key}` needs ?mode=replace "
                "(`tulle apply --replace`)",
                line_of(root, str(key)),
                str(key),
            )
    if "services" in fragment and not isinstance(fragment["services"], list):
        return _refused(source, "expected a list", line_of(root, "services"), "services")
    if "policy" in fragment and not isinstance(fragment["policy"], dict | None):
        return _refused(source, "expected a mapping", line_of(root, "policy"), "policy")
    for index, service in enumerate(fragment.get("services") or []):
        if not isinstance(service, dict) or not isinstance(service.get("name"), str):
            where = f"services[{index}]"
            return _refused(source, "each service needs a `name:`", line_of(root, where), where)
    try:
        current = load_document(read_manifest_bytes(manifest_path), str(manifest_path))[1] or {}
    except ManifestError as exc:
        return ApplyResult(False, problems=exc.problems)
    if not isinstance(current, dict):
        current = {}
    merged, changed, added = merge(current, fragment)
    merged_text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
    try:
        parse_local_manifest(merged_text, source=str(manifest_path))
    except ManifestError as exc:
        return ApplyResult(
            False, problems=[_remap(p, merged, fragment, root, source) for p in exc.problems]
        )
    write_atomically(manifest_path, merged_text)
    return ApplyResult(True, changed, added, manifest=str(manifest_path))
