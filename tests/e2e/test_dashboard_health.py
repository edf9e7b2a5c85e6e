"""The "Model health" panel in a real browser, fed real ``ModelHealth`` messages over ZeroMQ by a decoy-named
publisher: drift per feature with its status, prediction drift, data quality, and the alarm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dope.dashboard.server import free_port
from dope.messages import ModelHealth
from dope.transport import ZmqPublisher
from tests.e2e.dashboard_helpers import (
    HEARTBEAT_MS,
    START_MS,
    FakeSystem,
    dashboard_process,
    source_column,
    wait_until,
)
from tests.e2e.test_dashboard import browser  # noqa: F401 (the fixture)


def report(alarm: bool, vol_psi: float) -> ModelHealth:
    return ModelHealth(symbol="BTCUSDT", event_time=START_MS + 9_999, model_id="rf-7", window=500,
                       feature_names=["ret_1", "vol_10"], psi=[0.012, vol_psi], ks=[0.03, 0.31 if alarm else 0.05],
                       prediction_psi=0.02, prediction_ks=0.04, drift_psi=0.25, drift_ks=0.25, gap_rate=0.004,
                       empty_rate=0.125, late_trades=3, nonfinite=0, alarm=alarm,
                       alarm_since=START_MS + 9_999 if alarm else 0,
                       reason=f"psi vol_10 = {vol_psi:.3g} > 0.25" if alarm else "")


def headline(page: Any) -> str:
    return str(page.evaluate("() => Bokeh.documents[0].get_model_by_name('model_health').text"))


def test_model_health_panel_shows_drift_quality_and_the_alarm(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    system = FakeSystem(["BTCUSDT"])
    decoy = ZmqPublisher("tcp://127.0.0.1:*", "decoy", heartbeat_ms=HEARTBEAT_MS)
    try:
        with dashboard_process([*system.endpoints, decoy.endpoint], tmp_path / "store", free_port()) as url:
            for pub in [*system.publishers.values(), decoy]:
                assert pub.wait_for_subscriptions(1, 10_000)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
            assert wait_until(lambda: "BTCUSDT" in page.evaluate(
                "() => Bokeh.documents[0].get_model_by_name('symbol').options"), step=system.step)
            assert "no report yet" in headline(page)

            decoy.publish(report(alarm=False, vol_psi=0.08))
            assert wait_until(lambda: source_column(page, "drift", "feature") == ["ret_1", "vol_10", "prediction"])
            assert source_column(page, "drift", "psi") == [0.012, 0.08, 0.02]
            assert source_column(page, "drift", "status") == ["ok", "ok", "ok"]
            text = headline(page)
            assert "no drift alarm" in text and "rf-7" in text and "PSI 0.25 or KS 0.25" in text
            assert "gap rate 0.40%" in text and "empty bars 12.50%" in text and "late trades 3" in text
            assert page.get_by_text("DRIFT ALARM", exact=True).count() == 0

            decoy.publish(report(alarm=True, vol_psi=0.41))
            assert wait_until(lambda: source_column(page, "drift", "status") == ["ok", "ALARM", "ok"])
            assert "DRIFT ALARM" in headline(page) and "psi vol_10 = 0.41 &gt; 0.25" in headline(page)
            alarm = page.get_by_text("DRIFT ALARM", exact=True)
            alarm.wait_for(timeout=10_000)
            assert alarm.evaluate("e => getComputedStyle(e.parentElement).color") == "rgb(214, 39, 40)"
            assert page.get_by_text("psi vol_10 = 0.41 > 0.25").count() == 1
            cell = page.get_by_text("ALARM", exact=True)  # the table's status cell of vol_10
            cell.wait_for(timeout=10_000)
            assert cell.count() == 1 and cell.evaluate("e => getComputedStyle(e).color") == "rgb(214, 39, 40)"
            page.screenshot(path=str(tmp_path / "model_health.png"), full_page=True)
            assert errors == []
    finally:
        decoy.close()
        system.close()
