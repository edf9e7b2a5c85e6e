"""Screenshot of the running dashboard for the docs: ``dope demo`` (the embedded default), Chromium, a PNG.

    .venv/bin/python scripts/screenshot.py [--out docs/dashboard.png] [--wait-bars 40] [-- extra dope up args]

It starts ``dope demo`` in a temporary run folder (its own store, registry and ports), waits until the
dashboard shows trades or ``--wait-bars`` bars, takes a full-page screenshot and stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dope.dashboard.server import free_port  # noqa: E402
from tests.e2e.dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, source_length  # noqa: E402


def wait_for_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the dashboard at {url} did not answer within {timeout_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--wait-bars", type=int, default=260)
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("up_args", nargs="*", help="extra arguments for dope demo")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "DOPE_DASHBOARD__PORT": str(port), "DOPE_STORE__PATH": f"{tmp}/store",
               "DOPE_REGISTRY__PATH": f"{tmp}/registry", "DOPE_TRADER__STATE_DIR": f"{tmp}/trader"}
        up = subprocess.Popen([sys.executable, "-m", "dope.cli", "demo", "--run-dir", f"{tmp}/run", *args.up_args],
                              env=env, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_http(url, args.timeout)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 960, "height": 1600})
                page.goto(url)
                page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline and source_length(page, "bars") < args.wait_bars:
                    time.sleep(1)
                time.sleep(2)
                page.screenshot(path=args.out, full_page=True)
                browser.close()
            print(f"wrote {args.out}")
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
