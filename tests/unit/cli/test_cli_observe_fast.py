"""`tulle stat|routes|edges` read their options without typer exactly as typer does."""

from __future__ import annotations

from typing import Any

import pytest
import typer

import tulle.cli.observe  # noqa: F401  (registers the commands)
from tulle.cli.app import app
from tulle.cli.observe_fast import parse
from tulle.cli.observe_options import COMMANDS


def typer_command(name: str) -> Any:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    context = group.make_context("tulle", [name, "--help"], resilient_parsing=True)
    command = group.get_command(context, name)
    assert command is not None
    return command


@pytest.mark.parametrize("name", list(COMMANDS))
def test_options_are_the_typer_commands(name: str) -> None:
    spec = COMMANDS[name]
    params = {p.name: p for p in typer_command(name).params if p.name != "help"}
    expected = {o.name for o in spec.options} | ({spec.argument} if spec.argument else set())
    assert set(params) == expected
    for option in spec.options:
        param = params[option.name]
        assert tuple(param.opts) == option.spellings
        assert param.default == option.default
        assert param.envvar == option.envvar
    if spec.argument:
        argument = params[spec.argument]
        assert argument.required == (spec.argument_default is None)
        if spec.argument_default is not None:
            assert argument.default == spec.argument_default


CASES = [
    ("stat", []),
    ("stat", ["books", "--json"]),
    ("stat", ["--kind", "instance", "-w", "5m", "books"]),
    ("stat", ["-k", "service", "--control", "http://127.0.0.1:9"]),
    ("routes", ["books"]),
    ("routes", ["--window", "10s", "books", "--json"]),
    ("edges", ["--json"]),
    ("edges", []),
    ("stat", ["deploy/web", "-n", "shop", "--kind", "workload"]),
    ("stat", ["-A", "--json"]),
    ("routes", ["web", "--namespace", "shop"]),
    ("edges", ["-n", "shop"]),
    ("edges", ["--all-namespaces"]),
]


@pytest.mark.parametrize(("name", "args"), CASES)
@pytest.mark.parametrize("env_url", ["", "http://127.0.0.1:7"])
def test_same_values_as_typer(
    name: str, args: list[str], env_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TULLE_CONTROL_URL", env_url)
    fast = parse(COMMANDS[name], args, {"TULLE_CONTROL_URL": env_url})
    assert fast is not None
    context = typer_command(name).make_context(name, list(args))
    assert fast == context.params


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("stat", ["--help"]),
        ("stat", ["-h"]),
        ("stat", ["--kind", "pods"]),  # typer explains the choices
        ("stat", ["--kind"]),
        ("stat", ["--window=10s"]),
        ("stat", ["-w10s"]),
        ("stat", ["--json", "--json"]),
        ("stat", ["a", "b"]),
        ("stat", ["--", "a"]),
        ("routes", []),  # its SERVICE is required
        ("edges", ["books"]),
        ("edges", ["--nope"]),
    ],
)
def test_leaves_anything_unusual_to_typer(name: str, args: list[str]) -> None:
    assert parse(COMMANDS[name], args, {}) is None


def test_a_parameter_the_table_does_not_know_goes_to_typer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tulle.cli import observe, observe_fast

    called: list[dict[str, Any]] = []

    def stat(service: str, kind: str, window: str, as_json: bool, control: str, token: str) -> None:
        called.append({})

    monkeypatch.setattr(observe, "stat", stat)
    observe_fast.run_fast("stat", ["--json"])  # returns: typer must parse
    assert called == []
