"""A whole manifest: the top level, and the entry points that read one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from tulle.control.manifest.document import compose_bounded, decode_manifest, read_manifest_bytes
from tulle.control.manifest.errors import ManifestError
from tulle.control.manifest.model import Manifest, ServiceSpec
from tulle.control.manifest.policy import PolicyReader
from tulle.control.manifest.reader import _NULL, _describe
from tulle.control.manifest.services import ServicesReader
from tulle.core.policy import EMPTY_POLICY


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises ManifestError (also for I/O errors)."""
    source = str(path)
    return parse_manifest(read_manifest_bytes(path), source=source)


def parse_manifest(text: str | bytes, *, source: str = "mesh.yaml") -> Manifest:
    """Validate manifest text and convert it; raises ManifestError listing every problem."""
    return read_with(ManifestReader(source), text)


def read_with(reader: ManifestReader, text: str | bytes) -> Manifest:
    """`parse_manifest` with a reader that may also read the local runner's fields."""
    source = reader.source
    root = compose_bounded(decode_manifest(text, source), source)
    manifest = reader.manifest(root)
    if reader.problems or manifest is None:
        # Sorted by line so that the list reads like the file.
        raise ManifestError(sorted(reader.problems, key=lambda p: p.line or 0))
    return manifest


class ManifestReader(ServicesReader, PolicyReader):
    """The whole document: `services:` and `policy:`.

    `ingress:` and each service's `instances:` are the local runner's
    (tulle.local.manifest reads them): accepted here and ignored, as the
    control plane has no use for them.
    """

    def local_top_fields(self, fields: Mapping[str, Node]) -> None:
        """`ingress:` and `isolated:` belong to the local runner: ignored here."""

    def manifest(self, root: Node | None) -> Manifest | None:
        if root is None:
            self.problem(None, "", "the manifest is empty; expected a top-level `services:` list")
            return None
        fields = self.mapping(
            root, "", ("services", "policy", "ingress", "isolated"), required=("services",)
        )
        if fields is None:
            return None
        policy: Mapping[str, Any] | None = None
        if "policy" in fields:
            policy_node = fields["policy"]
            if isinstance(policy_node, MappingNode):
                policy = dict(self._constructor.construct_object(policy_node, deep=True))
            elif not (isinstance(policy_node, ScalarNode) and policy_node.tag == _NULL):
                self.problem(
                    policy_node, "policy", f"expected a mapping, got {_describe(policy_node)}"
                )
        if "services" not in fields:
            return None
        services_node = fields["services"]
        if isinstance(services_node, ScalarNode) and services_node.tag == _NULL:
            service_nodes: list[Node] | None = []
        else:
            service_nodes = self.sequence(services_node, "services")
        if service_nodes is None:
            return None
        services: dict[str, ServiceSpec] = {}
        # Backends may name services declared later, so they are checked after.
        pending_backends: list[tuple[Node, str, str]] = []
        for index, node in enumerate(service_nodes):
            path = f"services[{index}]"
            spec = self.service(node, path, pending_backends)
            if spec is None:
                continue
            if spec.name in services:
                first = services[spec.name].line
                self.problem(
                    node, f"{path}.name", f'duplicate service "{spec.name}" (first on line {first})'
                )
                continue
            services[spec.name] = spec
        for node, path, backend in pending_backends:
            if backend not in self.declared:
                known = ", ".join(sorted(self.declared)) or "none"
                self.problem(node, path, f'no service named "{backend}" (services: {known})')
        self.local_top_fields(fields)
        authorization = EMPTY_POLICY
        if policy is not None:
            authorization = self.policy_section(fields["policy"], services) or EMPTY_POLICY
        return Manifest(
            services=services,
            policy=policy,
            source=self.source,
            authorization=authorization,
        )
