"""The chaos suite's measures catch what they are meant to: a missing or altered bar, a decision missing,
memory that grows in each lifetime, a kill that never healed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dope.config import config_from_dict
from dope.store import BarStore
from tests.chaos.measures import (
    RssSample,
    compare_bars,
    decisions_lost,
    percentile,
    reference_store,
    rss_growth_mb_per_h,
    rss_period_peaks_mb,
)

CONFIG = config_from_dict({"collector": {"source": "synthetic", "symbols": ["BTCUSDT", "ETHUSDT"]},
                           "synthetic": {"seed": 3, "rate_scale": 0.2}})
INTERVAL = CONFIG.bars.interval_ms


def test_a_missing_and_an_altered_bar_are_found(tmp_path: Path) -> None:
    reference = reference_store(CONFIG, 1_704_067_200_000 + 60 * INTERVAL, tmp_path / "ref")
    stack = BarStore(tmp_path / "stack")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        bars = reference.read_bars(symbol, INTERVAL)
        if symbol == "ETHUSDT":
            bars = bars.drop(index=10).reset_index(drop=True)
            bars.loc[20, "close"] += 0.01
        stack.write_bars(bars, INTERVAL)
    figures = compare_bars(stack, CONFIG, tmp_path / "work")
    assert (figures.reference, figures.lost, figures.different, figures.extra) == (120, 1, 1, 0)
    decided = {(s, int(t)) for s in ("BTCUSDT", "ETHUSDT") for t in reference.read_bars(s, INTERVAL)["open_time"]}
    decided.remove(("BTCUSDT", 1_704_067_200_000 + 5 * INTERVAL))
    assert decisions_lost(reference, INTERVAL, ["BTCUSDT", "ETHUSDT"], decided) == (120, 1)


def test_memory_growth_is_pooled_over_lifetimes_without_their_warm_up() -> None:
    samples = []
    for pid, start in ((1, 0.0), (2, 600.0)):  # a restart: the second lifetime starts low again
        for k in range(300):
            age = 2.0 * k
            rss = 100e6 + (50e6 if age < 60 else 0.0) + age * 10e6 / 3600  # a warm-up bump, then +10 MB/h
            samples.append(RssSample("trader", pid, age, start + age, int(rss)))
    growth, span = rss_growth_mb_per_h(samples, warmup_s=60.0)["trader"]
    assert growth == pytest.approx(10.0, rel=1e-6) and span == pytest.approx(2 * 538.0)


def test_a_kill_that_never_healed_is_the_worst_percentile() -> None:
    assert percentile([1.0, 2.0, math.inf], 99) == math.inf
    assert percentile([1.0, 2.0, math.nan], 50) == 2.0 and math.isnan(percentile([], 50))


def test_a_daily_cycle_has_flat_peaks_a_leak_rising_ones() -> None:
    """Over 2.5 periods a sawtooth (a day file growing until midnight) has the same peak in each whole
    period (the half period left over is not counted); a leak's peaks rise."""
    samples = []
    for k in range(500):
        t = 2.0 * k
        samples.append(RssSample("decoy", 1, t, t, int(200e6 + (t % 400.0) * 1e5)))
        samples.append(RssSample("leaky", 2, t, t, int(200e6 + t * 1e5)))
    peaks = rss_period_peaks_mb(samples, 400.0)
    assert peaks["decoy"] == pytest.approx([239.8, 239.8])
    assert peaks["leaky"] == pytest.approx([239.8, 279.8])
