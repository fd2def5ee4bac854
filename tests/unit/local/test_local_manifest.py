"""The local runner's fields (`instances:`, `ingress:`): read by `tulle up`, ignored by the
control plane; every bad input names field and line."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from tulle.control.manifest import ManifestError, parse_manifest
from tulle.local.manifest import IngressSpec, load_local_manifest, parse_local_manifest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mesh.yaml"


def test_the_example_gives_the_instances_tulle_up_runs() -> None:
    local = load_local_manifest(EXAMPLE)
    assert set(local.instances) <= set(local.mesh.services)
    users = local.instances["users"]
    assert users.command == ("tulle", "demo", "backend", "--addr", "127.0.0.1:{port}")
    assert users.replicas == 2
    assert users.env == {"LOG_LEVEL": "info", "WORKERS": "1"}
    assert users.service_account == "users"


def test_a_string_command_is_split_like_a_shell_would() -> None:
    local = parse_local_manifest(
        dedent(
            """
            services:
              - name: app
                instances: {command: "python -m app --port {port} --name 'a b'"}
            """
        )
    )
    instances = local.instances["app"]
    assert instances.command == ("python", "-m", "app", "--port", "{port}", "--name", "a b")
    assert instances.replicas == 1


def test_ingress_is_read_with_the_services_it_exposes() -> None:
    text = "services: [{name: a}, {name: b}]\ningress: {port: 8000, services: [b]}\n"
    assert parse_local_manifest(text).ingress == IngressSpec(port=8000, services=("b",), line=2)
    assert parse_local_manifest("services: [{name: a}]\n").ingress is None


def test_the_control_plane_accepts_the_local_fields_and_ignores_them() -> None:
    text = (
        "services:\n  - name: a\n    instances: {command: 'run {prot}'}\n"
        "ingress: {services: [nope]}\n"
    )
    assert set(parse_manifest(text).services) == {"a"}
    with pytest.raises(ManifestError) as caught:
        parse_local_manifest(text)
    assert len(caught.value.problems) == 2


# Each bad document names the exact "file:line: field: message" it must produce.
BAD = [
    (
        "services:\n  - name: a\n    instances: {replicas: 2}\n",
        'mesh.yaml:3: services[0].instances: missing required field "command"',
    ),
    (
        "services:\n  - name: a\n    instances: {command: 'run {prot}'}\n",
        "mesh.yaml:3: services[0].instances.command: unknown placeholder"
        ' "{prot}" (known: {port}, {replica})',
    ),
    (
        "services:\n  - name: a\n    instances: {command: 'run \"x'}\n",
        "mesh.yaml:3: services[0].instances.command: cannot split the command:"
        " No closing quotation",
    ),
    (
        "services:\n  - name: a\n    instances: {command: []}\n",
        "mesh.yaml:3: services[0].instances.command: the command is empty",
    ),
    (
        "services:\n  - name: a\n    instances:\n      command: [run]\n      replicas: many\n",
        'mesh.yaml:5: services[0].instances.replicas: expected a whole number, got "many"',
    ),
    (
        "services:\n  - name: a\n    instances:\n      command: [run]\n      env: {A: [1]}\n",
        "mesh.yaml:5: services[0].instances.env.A: expected a value, got a list",
    ),
    (
        "services:\n  - name: a\n    instances:\n      command: [run]\n     "
        " serviceAccount: Web_1\n",
        'mesh.yaml:5: services[0].instances.serviceAccount: "Web_1" is not a valid account name',
    ),
    (
        "services:\n  - name: a\n    instances:\n      command: [run]\n"
        "      serviceAccount: web\n      identity: spiffe://t/ns/d/sa/web\n",
        "mesh.yaml:5: services[0].instances.serviceAccount: give either identity or serviceAccount",
    ),
    (
        "services: [{name: a}]\ningress: {services: [b]}\n",
        'mesh.yaml:2: ingress.services[0]: no service named "b" (services: a)',
    ),
    (
        "services: [{name: a}]\ningress: {port: 0}\n",
        "mesh.yaml:2: ingress.port: must be between 1 and 65535, got 0",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[expected for _, expected in BAD])
def test_bad_local_fields_name_the_field_and_the_line(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_local_manifest(text)
    message = str(caught.value)
    assert any(line.startswith(expected) for line in message.splitlines()), message
