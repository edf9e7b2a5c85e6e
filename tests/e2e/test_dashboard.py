"""The live dashboard in a real browser (Debian's Chromium, Playwright), fed by real ZeroMQ publishers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dope.bars import bars_to_frame
from dope.dashboard.server import free_port
from dope.store import BarStore
from tests.e2e.dashboard_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    START_MS,
    FakeSystem,
    _bar,
    dashboard_process,
    require_chromium,
    source_column,
    source_length,
    wait_until,
)

PANELS = ["symbol", "feed", "price_plot", "prediction_plot", "equity_plot", "drawdown_plot", "scorecard_table", "health_table", "risk"]


@pytest.fixture
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def seed_history(store: Path, bars: int) -> None:
    frame = bars_to_frame([_bar("BTCUSDT", START_MS - (bars - i) * 10_000, 90.0 + i) for i in range(bars)])
    BarStore(store).write_bars(frame, 10_000)


def test_dashboard_shows_history_grows_live_marks_trades_and_tracks_health(browser: Any, tmp_path: Path) -> None:
    seed_history(tmp_path / "store", 30)
    system = FakeSystem(["BTCUSDT", "ETHUSDT"])
    try:
        with dashboard_process(system.endpoints, tmp_path / "store", free_port()) as url:
            for pub in system.publishers.values():
                pub.wait_for_subscriptions(1, 10_000)
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
            page.wait_for_selector(".bk-Column", timeout=30_000)

            for name in PANELS:
                assert page.evaluate("(n) => Bokeh.documents[0].get_model_by_name(n) !== null", name), name
            assert source_length(page, "bars") == 30, "history from the store is shown on open"

            assert wait_until(lambda: source_length(page, "bars") >= 40, step=system.step)
            assert source_length(page, "chosen") > 0 and source_length(page, "scores") > 0
            assert source_length(page, "equity") > 0

            assert source_length(page, "buys") == 0
            system.step(fill="BUY")
            system.step(fill="SELL")
            assert wait_until(lambda: source_length(page, "buys") >= 1 and source_length(page, "sells") >= 1,
                              step=system.heartbeats)

            assert wait_until(lambda: "model-rf" in source_column(page, "health", "service"),
                              step=system.heartbeats)
            endpoint = system.publishers["model-rf"].endpoint
            system.stop_service("model-rf")
            assert wait_until(lambda: _status(page, "model-rf") == "dead", step=system.heartbeats)
            assert _status(page, "trader") == "ok"
            page.screenshot(path=str(tmp_path / "dead.png"))
            system.restart_service("model-rf", endpoint)
            assert wait_until(lambda: _status(page, "model-rf") == "ok", step=system.heartbeats)
            assert errors == []
    finally:
        system.close()


def _status(page: Any, service: str) -> str:
    services = source_column(page, "health", "service")
    statuses = source_column(page, "health", "status")
    return dict(zip(services, statuses, strict=True)).get(service, "absent")
