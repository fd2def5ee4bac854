"""The local runner's part of the manifest: what only `tulle up` reads.

A service's `instances:` (the command, replicas, environment and identity of
the processes `tulle up` starts), the top-level `ingress:` (where calls from
outside the mesh come in) and `isolated:` (each instance in its own network
namespace, docs/transparent.md). The control plane's reader (tulle.control.manifest)
accepts these fields and ignores them; `LocalReader` reads the same document
with them, so `tulle up`, `tulle manifest validate` and the dashboard's apply
check the whole file. The format is documented in docs/manifest.md.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node, ScalarNode, SequenceNode

from tulle.control.manifest import Manifest, ManifestReader, read_manifest_bytes, read_with
from tulle.control.manifest.reader import _NULL, _describe, _line

COMMAND_PLACEHOLDERS = ("port", "replica")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class InstancesSpec:
    """How `tulle up` runs a service locally."""

    # argv; a string in the manifest is split like a shell would (no shell runs).
    # May contain the placeholders {port} and {replica}.
    command: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    identity: str | None = None
    service_account: str | None = None


@dataclass(frozen=True, slots=True)
class IngressSpec:
    """Where `tulle up` lets calls from outside the mesh in."""

    port: int | None = None  # None: `tulle up`'s default (or its --ingress-port)
    services: tuple[str, ...] | None = None  # None: every service
    line: int = 0


@dataclass(frozen=True, slots=True)
class LocalManifest:
    """A manifest as `tulle up` reads it: the mesh, plus how to run it here."""

    mesh: Manifest
    # By service name; only the services that give `instances:`.
    instances: Mapping[str, InstancesSpec] = field(default_factory=dict)
    ingress: IngressSpec | None = None
    # `isolated: true`: each instance in its own network namespace (`tulle up --isolated`).
    isolated: bool = False


def load_local_manifest(path: str | Path) -> LocalManifest:
    """Read and validate a manifest file with its local fields; raises ManifestError."""
    return parse_local_manifest(read_manifest_bytes(path), source=str(path))


def parse_local_manifest(text: str | bytes, *, source: str = "mesh.yaml") -> LocalManifest:
    """Validate the whole document, local fields included; raises ManifestError."""
    reader = LocalReader(source)
    mesh = read_with(reader, text)
    return LocalManifest(
        mesh=mesh,
        instances=reader.instances_of,
        ingress=reader.ingress_spec,
        isolated=reader.isolated,
    )


class LocalReader(ManifestReader):
    """The control plane's reader, plus `instances:`, `ingress:` and `isolated:`."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.instances_of: dict[str, InstancesSpec] = {}
        self.ingress_spec: IngressSpec | None = None
        self.isolated = False

    def local_service_fields(self, name: str | None, fields: Mapping[str, Node], path: str) -> None:
        if "instances" not in fields:
            return
        spec = self.instances(fields["instances"], f"{path}.instances")
        # A repeated service name is an error of its own; the first one counts.
        if spec is not None and name is not None:
            self.instances_of.setdefault(name, spec)

    def local_top_fields(self, fields: Mapping[str, Node]) -> None:
        if "ingress" in fields:
            self.ingress_spec = self.ingress(fields["ingress"])
        if "isolated" in fields:
            self.isolated = bool(self.boolean(fields["isolated"], "isolated"))

    def instances(self, node: Node, path: str) -> InstancesSpec | None:
        fields = self.mapping(
            node,
            path,
            ("command", "replicas", "env", "identity", "serviceAccount"),
            required=("command",),
        )
        if fields is None or "command" not in fields:
            return None
        command = self.command(fields["command"], f"{path}.command")
        replicas = 1
        if "replicas" in fields:
            replicas = self.integer(fields["replicas"], f"{path}.replicas", 0, 1000) or 0
        env: dict[str, str] = {}
        if "env" in fields:
            env = self.string_map(fields["env"], f"{path}.env") or {}
        identity = None
        if "identity" in fields:
            identity = self.identity(fields["identity"], f"{path}.identity")
        account = None
        if "serviceAccount" in fields:
            account_node = fields["serviceAccount"]
            account = self.string(account_node, f"{path}.serviceAccount")
            if account is not None and not _LABEL_RE.match(account):
                self.problem(
                    account_node,
                    f"{path}.serviceAccount",
                    f'"{account}" is not a valid account name: use lower-case letters, '
                    'digits and "-"',
                )
                account = None
        if "identity" in fields and "serviceAccount" in fields:
            self.problem(
                fields["serviceAccount"],
                f"{path}.serviceAccount",
                "give either identity or serviceAccount, not both",
            )
            return None
        if command is None:
            return None
        return InstancesSpec(
            command=command,
            replicas=replicas,
            env=env,
            identity=identity,
            service_account=account,
        )

    def command(self, node: Node, path: str) -> tuple[str, ...] | None:
        if isinstance(node, SequenceNode):
            parts: list[str] = []
            for i, part in enumerate(node.value):
                # Numbers in argv (`--workers, 2`) are fine: they keep their text.
                if not isinstance(part, ScalarNode) or part.tag == _NULL or part.value == "":
                    self.problem(part, f"{path}[{i}]", f"expected a word, got {_describe(part)}")
                    return None
                parts.append(str(part.value))
        else:
            text = self.string(node, path, what="a command (a string or a list of words)")
            if text is None:
                return None
            try:
                parts = shlex.split(text)
            except ValueError as exc:
                self.problem(node, path, f"cannot split the command: {exc}")
                return None
        if not parts:
            self.problem(node, path, "the command is empty")
            return None
        for part in parts:
            for placeholder in _PLACEHOLDER_RE.findall(part):
                if placeholder not in COMMAND_PLACEHOLDERS:
                    known = ", ".join(f"{{{p}}}" for p in COMMAND_PLACEHOLDERS)
                    self.problem(
                        node, path, f'unknown placeholder "{{{placeholder}}}" (known: {known})'
                    )
                    return None
        return tuple(parts)

    def ingress(self, node: Node) -> IngressSpec | None:
        fields = self.mapping(node, "ingress", ("port", "services"))
        if fields is None:
            return None
        port = self.integer(fields["port"], "ingress.port", 1, 65535) if "port" in fields else None
        services: tuple[str, ...] | None = None
        if "services" in fields:
            names: list[str] = []
            for i, item in enumerate(self.sequence(fields["services"], "ingress.services") or []):
                name = self.name(item, f"ingress.services[{i}]")
                if name is not None and name not in self.declared:
                    known = ", ".join(sorted(self.declared)) or "none"
                    self.problem(
                        item,
                        f"ingress.services[{i}]",
                        f'no service named "{name}" (services: {known})',
                    )
                elif name is not None:
                    names.append(name)
            services = tuple(names)
        return IngressSpec(port=port, services=services, line=_line(node))
