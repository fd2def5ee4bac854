"""`tulle dashboard`: open the control plane's web dashboard in a browser.

The control plane serves the dashboard on its HTTP port (docs/dashboard.md);
this command only finds that port (as the observability commands do:
`--control`, `TULLE_CONTROL_URL`, the state.json of the mesh found by
`--state-dir`, `./.tulle` or the registered current mesh, else
http://127.0.0.1:8084), checks that something answers there, and opens the
URL, or prints it when there is no browser to open. The URL carries the API
token in its fragment when the CLI has one, so that the page's live tap works.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from urllib.parse import quote

import typer

from tulle.cli.app import app
from tulle.cli.observe import (
    CONTROL_OPTION,
    STATE_DIR_OPTION,
    TOKEN_OPTION,
    ControlUnreachable,
    api_call,
    resolve_api,
)

PROBE_TIMEOUT_S = 3.0


def dashboard_url(control: str, service: str = "", token: str = "") -> str:
    """The dashboard's URL on the control plane at `control`, optionally at one service.

    With `token`, the API token rides in the fragment (`&token=` after the
    route): browsers never send a fragment to a server, and the page moves
    it to the tab's sessionStorage at once (static/api.js), so live tap works.
    """
    fragment = f"/service/{quote(service, safe='')}" if service else ""
    if token:
        fragment += (
            f"&token={quote(token, safe='')}" if fragment else f"token={quote(token, safe='')}"
        )
    return f"{control}/" + (f"#{fragment}" if fragment else "")


def _can_show_a_browser() -> bool:
    """A desktop to open a window on, or a browser the user named in $BROWSER.

    Without either, Python's `webbrowser` falls back to text browsers (lynx,
    w3m) that would take over the terminal: printing the URL is better there.
    """
    if os.environ.get("BROWSER") or sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_in_browser(url: str) -> bool:
    if not _can_show_a_browser():
        return False
    try:
        # `get()` raises when no browser is known (a server, a container).
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    try:
        return browser.open(url)
    except OSError:
        return False


@app.command()
def dashboard(
    service: str = typer.Argument("", help="Open this service's page instead of the overview."),
    control: str = CONTROL_OPTION,
    state_dir: str = STATE_DIR_OPTION,
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Only print the URL; do not start a browser."
    ),
    token: str = TOKEN_OPTION,
) -> None:
    """Open the dashboard (served by the control plane) in a browser, or print its URL."""
    base, api_token = resolve_api(control, token, state_dir=state_dir)
    try:
        status, _ = api_call(base, "/api", timeout=PROBE_TIMEOUT_S)
    except ControlUnreachable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if status != 200:
        typer.echo(
            f"{base} answered HTTP {status}: is that the control plane's HTTP port?\n"
            "hint: `tulle control` prints it as http=HOST:PORT in its ready line",
            err=True,
        )
        raise typer.Exit(1)
    url = dashboard_url(base, service, api_token)
    if not no_browser and _open_in_browser(url):
        typer.echo(f"dashboard opened in your browser: {url}")
    else:
        typer.echo(url)
