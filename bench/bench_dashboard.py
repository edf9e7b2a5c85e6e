"""Dashboard update cost: 10 symbols of 10 s bars replayed at 100x (100 bars/s into the page's server).

Measured while a real Chromium page is open: the dashboard server's CPU share
(process CPU time / wall time), the Bokeh document patches the browser receives
per second (websocket frames), and the browser's responsiveness (median and
p95 of an animation-frame round trip). The baseline is the same dashboard, same
page, with an idle bus (heartbeats only), measured in the same run.

    .venv/bin/python -m bench.bench_dashboard [--seconds 15] [--symbols 10] [--speed 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psutil

from dope.dashboard.server import free_port
from tests.e2e.dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, FakeSystem, dashboard_process

FRAME_PROBE = """() => new Promise(resolve => { const t0 = performance.now();
  requestAnimationFrame(() => resolve(performance.now() - t0)); })"""


def measure(page: Any, server: psutil.Process, frames: list[int], seconds: float, step: Any) -> dict[str, float]:
    """CPU share, websocket frames/s and frame-probe latency over ``seconds`` while ``step`` runs."""
    cpu0, frames0, start = _cpu(server), frames[0], time.monotonic()
    probes: list[float] = []
    while time.monotonic() - start < seconds:
        step()
        probes.append(float(page.evaluate(FRAME_PROBE)))
    wall = time.monotonic() - start
    probes.sort()
    return {"cpu_share": (_cpu(server) - cpu0) / wall, "patches_per_s": (frames[0] - frames0) / wall,
            "frame_ms_p50": probes[len(probes) // 2], "frame_ms_p95": probes[int(len(probes) * 0.95)]}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def paced(system: FakeSystem, bars_per_s_per_symbol: float) -> Any:
    """A step function publishing bars at the replay's pace."""
    period, next_at = 1.0 / bars_per_s_per_symbol, [time.monotonic()]

    def step() -> None:
        while time.monotonic() >= next_at[0]:
            system.step()
            next_at[0] += period
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--speed", type=float, default=100.0, help="replay speed of 10 s bars")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    system = FakeSystem([f"SYM{i}USDT" for i in range(args.symbols)])
    with TemporaryDirectory() as tmp, dashboard_process(system.endpoints, Path(tmp), free_port()) as url, \
            sync_playwright() as playwright:
        server = next(p for p in psutil.Process().children() if "dashboard" in " ".join(p.cmdline()))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        frames = [0]
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.__setitem__(0, frames[0] + 1)))
        for pub in system.publishers.values():
            pub.wait_for_subscriptions(1, 10_000)
        system.step()
        page.goto(url)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
        idle = measure(page, server, frames, args.seconds / 2, system.heartbeats)
        busy = measure(page, server, frames, args.seconds, paced(system, args.speed / 10))
        bars = system.step_count * args.symbols
        browser.close()
    system.close()
    print(f"replay: {args.symbols} symbols x 10 s bars at {args.speed:g}x = "
          f"{args.symbols * args.speed / 10:g} bars/s ({bars} bars published)")
    for name, values in (("idle bus (baseline)", idle), ("replay", busy)):
        print(f"{name:<20} server CPU {values['cpu_share']:6.1%}  patches/s {values['patches_per_s']:7.1f}  "
              f"frame round trip p50 {values['frame_ms_p50']:5.1f} ms  p95 {values['frame_ms_p95']:5.1f} ms")
    print(f"ratios replay/idle: server CPU {busy['cpu_share'] / max(idle['cpu_share'], 1e-9):.1f}x, "
          f"frame p95 {busy['frame_ms_p95'] / max(idle['frame_ms_p95'], 1e-9):.2f}x; "
          f"server CPU per bar {busy['cpu_share'] / (args.symbols * args.speed / 10) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
