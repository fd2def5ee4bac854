"""The local runner's fields of a service: how `tulle up` runs its instances."""

from __future__ import annotations

import re
import shlex

from yaml.nodes import Node, ScalarNode, SequenceNode

from tulle.control.manifest.model import InstancesSpec
from tulle.control.manifest.reader import _NULL, Reader, _describe

COMMAND_PLACEHOLDERS = ("port", "replica")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


class InstancesReader(Reader):
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
