"""`tulle --help` drawn without typer (tulle.cli.roothelp) is typer's help, exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer

from tulle.cli import main, roothelp
from tulle.cli.commands import COMMANDS

# The environment typer's help looks at: each case sets its own.
ENV_KNOBS = (
    "TYPER_USE_RICH",
    "TERMINAL_WIDTH",
    "FORCE_COLOR",
    "PY_COLORS",
    "GITHUB_ACTIONS",
    "_TYPER_FORCE_DISABLE_TERMINAL",
    "NO_COLOR",
    "COLUMNS",
)


@pytest.fixture(scope="module")
def full_app() -> typer.Typer:
    main.register_all()
    from tulle.cli.app import app

    return app


TYPERS = (
    "import sys\n"
    "from tulle.cli import app, main\n"
    "main.register_all()\n"
    "sys.argv = ['tulle', '--help']\n"
    "app.app(prog_name='tulle')\n"
)
OURS = "from tulle.cli import roothelp\nroothelp.render('tulle')\n"


def rendered(code: str, env: dict[str, str]) -> str:
    # A fresh interpreter each: the order of the commands in typer's list is
    # the order their modules were imported in, which a test process muddles.
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("width", ["80", "120", "60"])
@pytest.mark.parametrize("color", [False, True])
def test_root_help_is_typers(width: str, color: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KNOBS}
    env["TERMINAL_WIDTH"] = width
    if color:
        env["FORCE_COLOR"] = "1"
    ours = rendered(OURS, env)
    assert ours == rendered(TYPERS, env)
    assert ("\x1b[" in ours) == color
    assert all(name in ours for name in COMMANDS)


def test_commands_table_matches_the_groups(full_app: typer.Typer) -> None:
    group = typer.main.get_group(full_app)
    context = group.make_context("tulle", ["--help"], resilient_parsing=True)
    names = group.list_commands(context)
    # (Their order here is this process's import order; the help test checks it.)
    assert sorted(names) == sorted(COMMANDS)
    for name in names:
        command = group.get_command(context, name)
        assert command is not None
        assert (command.short_help or command.help or "").strip() == COMMANDS[name][0]


def test_each_command_is_registered_by_its_own_modules() -> None:
    # In a fresh interpreter, importing a command's modules alone registers it.
    code = (
        "import importlib, sys, typer\n"
        "from tulle.cli import app, commands\n"
        "name = sys.argv[1]\n"
        "for module in commands.COMMANDS[name][1]: importlib.import_module(module)\n"
        "group = typer.main.get_group(app.app)\n"
        "ctx = group.make_context('tulle', ['--help'], resilient_parsing=True)\n"
        "sys.exit(0 if name in group.list_commands(ctx) else 1)\n"
    )
    for name in COMMANDS:
        result = subprocess.run([sys.executable, "-c", code, name], capture_output=True, timeout=60)
        assert result.returncode == 0, (name, result.stderr.decode())


def test_program_name_as_click_detects_it() -> None:
    import types

    script = types.ModuleType("__main__")
    assert roothelp.program_name("/usr/bin/tulle", script) == "tulle"
    package = types.ModuleType("__main__")
    package.__package__ = "tulle"
    assert roothelp.program_name("/x/tulle/__main__.py", package) == "python -m tulle"
