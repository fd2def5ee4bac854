"""`POST /api/apply`: change a running mesh's manifest (routes, splits, timeouts, retries).

The body is YAML: a whole manifest (`?mode=replace`) or, by default, a
fragment merged into the current one service by service: each service of the
fragment replaces the top-level fields it names in the service of the same
name (so `routes:` replaces the whole route list), and new services are
added. The result is validated with the manifest validator; problems are
reported against the *sent* document (its field path and line, found by
walking the fragment's YAML nodes) and nothing is written. A valid result
replaces the control plane's manifest file atomically (write + rename), and
the control plane's file watcher streams it to the proxies.

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

from tulle.control.manifest import ManifestError, Problem, parse_manifest

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


def merge(
    current: dict[str, Any], fragment: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The current manifest with the fragment's services merged in; (merged, changed, added)."""
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
    if "policy" in fragment:
        merged["policy"] = fragment["policy"]
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
    text = body.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        fragment = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return _refused(source, f"not valid YAML: {getattr(exc, 'problem', None) or exc}", line)
    if mode == "replace":
        try:
            manifest = parse_manifest(body, source=source)
        except ManifestError as exc:
            return ApplyResult(False, problems=exc.problems)
        write_atomically(manifest_path, text)
        return ApplyResult(True, changed=sorted(manifest.services), manifest=str(manifest_path))
    if not isinstance(fragment, dict) or not isinstance(fragment.get("services"), list):
        return _refused(source, "expected a mapping with a `services:` list", line_of(root, ""))
    for index, service in enumerate(fragment["services"]):
        if not isinstance(service, dict) or not isinstance(service.get("name"), str):
            where = f"services[{index}]"
            return _refused(source, "each service needs a `name:`", line_of(root, where), where)
    try:
        current = yaml.safe_load(manifest_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return _refused(str(manifest_path), f"cannot read the current manifest: {exc}")
    if not isinstance(current, dict):
        current = {}
    merged, changed, added = merge(current, fragment)
    merged_text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
    try:
        parse_manifest(merged_text, source=str(manifest_path))
    except ManifestError as exc:
        return ApplyResult(
            False, problems=[_remap(p, merged, fragment, root, source) for p in exc.problems]
        )
    write_atomically(manifest_path, merged_text)
    return ApplyResult(True, changed, added, manifest=str(manifest_path))
