"""Scrape targets: which proxy admin listeners the metrics API reads, and under which names.

A target is (service, instance, admin address). `tulle up` passes them with
`tulle control --scrape-targets FILE`, where FILE is either JSON (a list of
`{"service", "instance", "admin"}` objects, `{"targets": [...]}`, or the
`.tulle/state.json` of `tulle up` itself: its `instances` and `ingress`) or text
with one `service=instance=host:port` per line (`#` starts a comment). The
same `service=instance=host:port` form is accepted inline, comma-separated.
The file is re-read when it changes, so a mesh that grows needs no restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tulle.core.discovery import parse_address
from tulle.core.scrape import ScrapeTarget


class TargetError(ValueError):
    """Scrape targets that cannot be read; the message says which entry and why."""


def _target(service: str, instance: str, admin: str, where: str) -> ScrapeTarget:
    if not service:
        raise TargetError(f"{where}: the service name is empty")
    try:
        parse_address(admin)
    except ValueError as exc:
        raise TargetError(f"{where}: admin address {admin!r}: {exc}") from None
    return ScrapeTarget(service, instance or admin, admin)


def parse_target_line(text: str, where: str = "target") -> ScrapeTarget:
    """`service=instance=host:port` (or `service=host:port`, instance = address)."""
    parts = [part.strip() for part in text.split("=")]
    if len(parts) == 3:
        return _target(parts[0], parts[1], parts[2], where)
    if len(parts) == 2:
        return _target(parts[0], "", parts[1], where)
    raise TargetError(f"{where}: expected SERVICE=INSTANCE=HOST:PORT, got {text!r}")


def _from_state(document: dict[str, Any], source: str) -> list[ScrapeTarget]:
    """The proxies of a `tulle up` state file: every sidecar, and the ingress."""
    found: list[ScrapeTarget] = []
    for index, instance in enumerate(document.get("instances") or []):
        if isinstance(instance, dict) and instance.get("admin") and instance.get("service"):
            where = f"{source}: instances[{index}]"
            name = str(instance.get("name", ""))
            found.append(_target(str(instance["service"]), name, str(instance["admin"]), where))
    ingress = document.get("ingress")
    if isinstance(ingress, dict) and ingress.get("admin"):
        found.append(_target("ingress", "ingress", str(ingress["admin"]), f"{source}: ingress"))
    return found


def _from_json(document: Any, source: str) -> list[ScrapeTarget]:
    if isinstance(document, dict) and "instances" in document:
        return _from_state(document, source)
    entries = document.get("targets") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise TargetError(f"{source}: expected a JSON list of targets or {{'targets': [...]}}")
    found: list[ScrapeTarget] = []
    for index, entry in enumerate(entries):
        where = f"{source}: targets[{index}]"
        if isinstance(entry, str):
            found.append(parse_target_line(entry, where))
            continue
        if not isinstance(entry, dict):
            raise TargetError(f"{where}: expected an object with service, instance, admin")
        admin = entry.get("admin")
        service = entry.get("service")
        instance = entry.get("instance", "")
        if not isinstance(admin, str) or not isinstance(service, str):
            raise TargetError(f"{where}: 'service' and 'admin' must be strings")
        found.append(_target(service, str(instance), admin, where))
    return found


def parse_targets(text: str, source: str = "targets") -> list[ScrapeTarget]:
    """Targets from JSON or `service=instance=host:port` lines."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise TargetError(f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return _from_json(document, source)
    found: list[ScrapeTarget] = []
    for lineno, raw in enumerate(stripped.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        for item in filter(None, (piece.strip() for piece in line.split(","))):
            found.append(parse_target_line(item, f"{source}:{lineno}"))
    return found


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A process of a `tulle up` mesh that its supervisor no longer restarts."""

    name: str
    state: str  # cannot-start | crash-loop
    error: str
    log: str
    command: str


def given_up_processes(text: str) -> list[GivenUp]:
    """The given-up processes listed in a `tulle up` state file (none for other files)."""
    try:
        document = json.loads(text)
    except ValueError:
        return []
    processes = document.get("processes") if isinstance(document, dict) else None
    found: list[GivenUp] = []
    for process in processes if isinstance(processes, list) else []:
        if not isinstance(process, dict):
            continue
        state = process.get("state")
        if state in ("cannot-start", "crash-loop"):
            argv = process.get("argv")
            command = " ".join(str(a) for a in argv) if isinstance(argv, list) else ""
            found.append(
                GivenUp(
                    str(process.get("name", "?")),
                    str(state),
                    str(process.get("error", "")),
                    str(process.get("log", "")),
                    command,
                )
            )
    return found


class TargetSource:
    """The targets of `--scrape-targets`: inline entries and/or a file re-read on change."""

    def __init__(self, spec: str) -> None:
        self._inline: list[ScrapeTarget] = []
        self._path: Path | None = None
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[ScrapeTarget] = []
        # From a `tulle up` state file: processes its supervisor gave up.
        self.given_up: list[GivenUp] = []
        self.error = ""
        spec = spec.strip()
        if not spec:
            return
        if "=" in spec.split(",", 1)[0] and not Path(spec).exists():
            self._inline = parse_targets(spec.replace(",", "\n"), "--scrape-targets")
        else:
            self._path = Path(spec)

    def current(self) -> list[ScrapeTarget]:
        """Every target now; a file that became unreadable keeps its last good list."""
        if self._path is not None:
            try:
                stat = self._path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self._stamp:
                    text = self._path.read_text()
                    self._from_file = parse_targets(text, str(self._path))
                    self.given_up = given_up_processes(text)
                    self._stamp = stamp
                    self.error = ""
            except (OSError, TargetError) as exc:
                self.error = str(exc)
        return sorted(set(self._inline) | set(self._from_file))
