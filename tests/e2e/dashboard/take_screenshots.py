"""Screenshots of the dashboard for the README, from a running mesh.

    tulle up -d --ingress-port 0            # the demo shop, traffic included
    python tests/e2e/dashboard/take_screenshots.py http://127.0.0.1:PORT [--service web]
    tulle down

The service page's live tap needs the API token: --token, else
$TULLE_API_TOKEN, else .tulle/api-token of this directory.

Writes docs/img/dashboard-{overview,topology,service}.png (dark theme) and
dashboard-overview-light.png, with Debian's /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))

from dashboard_browser import SCREENSHOTS, browser_page

SETTLE_MS = 2500


def take(url: str, service: str, out: Path, token: str = "") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with browser_page("dark") as page:
        page.goto(f"{url}/")
        page.wait_for_selector("tbody tr[data-service]")
        page.wait_for_timeout(SETTLE_MS)
        written.append(out / "dashboard-overview.png")
        page.screenshot(path=str(written[-1]))
        page.goto(f"{url}/#/topology")
        page.wait_for_selector("g[data-edge]", state="attached")
        page.wait_for_timeout(SETTLE_MS)
        written.append(out / "dashboard-topology.png")
        page.screenshot(path=str(written[-1]))
        page.goto(f"{url}/#/service/{service}" + (f"&token={token}" if token else ""))
        page.wait_for_selector("table[data-tap] tbody tr")
        page.wait_for_timeout(SETTLE_MS)
        written.append(out / "dashboard-service.png")
        page.screenshot(path=str(written[-1]), full_page=True)
    with browser_page("light") as page:
        page.goto(f"{url}/")
        page.wait_for_selector("tbody tr[data-service]")
        page.wait_for_timeout(SETTLE_MS)
        written.append(out / "dashboard-overview-light.png")
        page.screenshot(path=str(written[-1]))
    return written


def _default_token() -> str:
    token = os.environ.get("TULLE_API_TOKEN", "")
    if not token and Path(".tulle/api-token").is_file():
        token = Path(".tulle/api-token").read_text().strip()
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the control plane's HTTP URL (tulle up prints it)")
    parser.add_argument("--service", default="web", help="the service page to capture")
    parser.add_argument("--out", type=Path, default=SCREENSHOTS, help="where the PNGs go")
    parser.add_argument("--token", default=_default_token(), help="the control plane's API token")
    args = parser.parse_args()
    for path in take(args.url.rstrip("/"), args.service, args.out, args.token):
        print(path)


if __name__ == "__main__":
    main()
