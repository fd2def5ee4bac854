"""`tulle --help` (and `tulle` alone) without importing typer or any command group.

Typer draws its help with `typer.rich_utils`, which imports rich's Markdown,
Syntax and Traceback (markdown-it, pygments): about 0.2 s of CPU before the
first line, and every command module would have to be imported to list the
commands. This module draws the same panels from `tulle.cli.commands.COMMANDS`
with the few rich pieces they need, with typer's styles and its environment
knobs (TERMINAL_WIDTH, FORCE_COLOR, ...). The unit tests render typer's own
help of the full app next to this one, plain and in colour, and require the
two to be identical, so a new command or a typer upgrade cannot drift
unnoticed.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from tulle.cli.commands import COMMANDS, HELP, VERSION_HELP

# typer.rich_utils' styles, as of typer 0.29.
STYLE_USAGE_COMMAND = "bold"
STYLE_TYPES = "bold yellow"
STYLE_PANEL_BORDER = "dim"
STYLE_COMMANDS_FIRST_COLUMN = "bold cyan"
THEME = {
    "option": "bold cyan",
    "switch": "bold green",
    "negative_option": "bold magenta",
    "negative_switch": "bold red",
    "types": STYLE_TYPES,
    "types_sep": "dim",
    "usage": "yellow",
}
OPTION_HIGHLIGHTS = [
    r"(^|\W)(?P<switch>\-\w+)(?![a-zA-Z0-9])",
    r"(^|\W)(?P<option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
    r"(?P<types>\<[^\>]+\>)",
    r"(?P<usage>Usage: )",
]
NEGATIVE_HIGHLIGHTS = [
    r"(^|\W)(?P<negative_switch>\-\w+)(?![a-zA-Z0-9])",
    r"(^|\W)(?P<negative_option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
]
TYPES_HIGHLIGHTS = [
    r"^(?P<types_sep>(\[|<))",
    r"(?P<types_sep>\|)",
    r"(?P<types_sep>(\]|>))(\.\.\.)?$",
]
# The root app's options: (long, short, help), as typer and click define them.
OPTIONS = [
    ("--version", "", VERSION_HELP),
    ("--install-completion", "", "Install completion for the current shell."),
    (
        "--show-completion",
        "",
        "Show completion for the current shell, to copy it or customize the installation.",
    ),
    ("--help", "-h", "Show this message and exit."),
]


def program_name(argv0: str | None = None, main: ModuleType | None = None) -> str:
    """What click calls the program in "Usage:" (`tulle`, or `python -m tulle`)."""
    path = argv0 if argv0 is not None else sys.argv[0]
    module = main if main is not None else sys.modules["__main__"]
    package = getattr(module, "__package__", None)
    if package in (None, ""):
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    if name != "__main__":
        package = f"{package}.{name}"
    return f"python -m {str(package).lstrip('.')}"


def render(prog: str | None = None) -> bool:
    """Print the root help to stdout; False when typer must draw it instead."""
    if os.environ.get("TYPER_USE_RICH") is not None:
        return False  # typer decides between rich and plain click help
    try:
        from rich.align import Align
        from rich.columns import Columns
        from rich.console import Console, Group
        from rich.highlighter import RegexHighlighter
        from rich.padding import Padding
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text
        from rich.theme import Theme
    except ImportError:  # pragma: no cover - rich comes with typer
        return False

    class OptionHighlighter(RegexHighlighter):
        highlights = OPTION_HIGHLIGHTS

    class NegativeHighlighter(RegexHighlighter):
        highlights = NEGATIVE_HIGHLIGHTS

    class TypesHighlighter(RegexHighlighter):
        highlights = TYPES_HIGHLIGHTS

    highlighter, negative, types = OptionHighlighter(), NegativeHighlighter(), TypesHighlighter()
    width = os.environ.get("TERMINAL_WIDTH")
    force: bool | None = None
    if any(os.environ.get(name) for name in ("GITHUB_ACTIONS", "FORCE_COLOR", "PY_COLORS")):
        force = True
    if os.environ.get("_TYPER_FORCE_DISABLE_TERMINAL"):
        force = False
    console = Console(
        theme=Theme(THEME),
        highlighter=highlighter,
        color_system="auto",
        force_terminal=force,
        width=int(width) if width else None,
    )
    usage = f"Usage: {prog or program_name()} [OPTIONS] COMMAND [ARGS]..."
    console.print(Padding(highlighter(usage), 1), style=STYLE_USAGE_COMMAND)
    console.print(
        Padding(
            Align(Group(highlighter(Text.from_markup(HELP, style=""))), pad=False),
            (0, 1, 1, 1),
        )
    )

    def table(highlight: bool) -> Table:
        return Table(
            highlight=highlight,
            show_header=False,
            expand=True,
            box=None,
            show_lines=False,
            leading=0,
            border_style=None,
            row_styles=None,
            pad_edge=False,
            padding=(0, 1),
        )

    options = table(highlight=True)
    for long, short, text in OPTIONS:
        options.add_row(
            highlighter(long),
            highlighter(short),
            negative(""),
            negative(""),
            types(Text("<bool>", style=STYLE_TYPES, overflow="fold")),
            Columns([highlighter(Text.from_markup(text, style=""))]),
        )
    console.print(
        Panel(options, border_style=STYLE_PANEL_BORDER, title="Options", title_align="left")
    )
    commands = table(highlight=False)
    commands.add_column(
        style=STYLE_COMMANDS_FIRST_COLUMN, no_wrap=True, width=max(len(n) for n in COMMANDS)
    )
    commands.add_column("Description", justify="left", no_wrap=False, ratio=10)
    for name, (text, _) in COMMANDS.items():
        commands.add_row(Text(name), highlighter(Text.from_markup(text, style="")))
    console.print(
        Panel(commands, border_style=STYLE_PANEL_BORDER, title="Commands", title_align="left")
    )
    # click echoes the (empty) formatter text after typer's panels: one newline.
    print()
    return True
