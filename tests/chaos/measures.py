"""What a chaos run measures: bars lost against an uninterrupted run, decisions lost, kill-to-healthy times,
resident memory growth per service, and the markdown table of the figures."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dope.config import DopeConfig
from dope.market.synthetic_params import load_params
from dope.market.synthetic_trades import SyntheticSource
from dope.services.collector import Collector
from dope.store import BarStore
from dope.timeparse import parse_time

MB = 1_000_000.0


@dataclass(frozen=True)
class BarFigures:
    """The stack's store against an uninterrupted run over the same market time."""

    reference: int
    lost: int
    different: int
    extra: int


def reference_store(config: DopeConfig, end_ms: int, path: Path) -> BarStore:
    """An uninterrupted collector run of the configured synthetic market up to ``end_ms``, at full speed."""
    synthetic = config.synthetic
    start = parse_time(synthetic.start)
    source = SyntheticSource(list(config.collector.symbols), seed=synthetic.seed, start_ms=start,
                             duration_ms=end_ms - start, speed=0.0,
                             params=load_params(synthetic.params or None), rate_scale=synthetic.rate_scale)
    store = BarStore(path)
    asyncio.run(Collector(config.collector, config.bars, source, store).run())
    return store


def compare_bars(stack: BarStore, config: DopeConfig, work: Path) -> BarFigures:
    """Every bar the reference holds up to the stack's last stored bar must be in the stack's store, equal."""
    interval = config.bars.interval_ms
    symbols = list(config.collector.symbols)
    lasts = [stack.last_bar(s, interval) for s in symbols]
    if any(last is None for last in lasts):
        return BarFigures(0, 0, 0, 0)
    end = min(int(last["open_time"]) for last in lasts if last is not None) + interval
    reference = reference_store(config, end, work / "reference-store")
    totals = np.zeros(4, dtype=np.int64)
    for symbol in symbols:
        want = reference.read_bars(symbol, interval)
        got = stack.read_bars(symbol, interval, end_ms=end)
        totals += _difference(want, got)
    return BarFigures(*(int(x) for x in totals))


def _difference(want: pd.DataFrame, got: pd.DataFrame) -> np.ndarray:
    """(reference bars, missing, present but different, not in the reference) for one symbol."""
    merged = want.merge(got, on="open_time", how="outer", suffixes=("", "_got"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    columns = [c for c in want.columns if c not in ("open_time", "symbol")]
    differs = np.zeros(len(both), dtype=bool)
    for column in columns:
        a, b = both[column].to_numpy(), both[f"{column}_got"].to_numpy()
        differs |= ~((a == b) | (pd.isna(a) & pd.isna(b)))
    return np.array([len(want), int((merged["_merge"] == "left_only").sum()), int(differs.sum()),
                     int((merged["_merge"] == "right_only").sum())])


def decisions_lost(store: BarStore, interval_ms: int, symbols: Sequence[str],
                   decided: set[tuple[str, int]]) -> tuple[int, int]:
    """(bars stored up to the last decided bar, those without a decision) over ``symbols``."""
    total = lost = 0
    for symbol in symbols:
        times = [t for s, t in decided if s == symbol]
        if not times:
            continue
        stored = store.read_bars(symbol, interval_ms, end_ms=max(times) + 1)["open_time"].tolist()
        total += len(stored)
        lost += sum((symbol, int(t)) not in decided for t in stored)
    return total, lost


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, the next sample up (NaN for none; NaN values left out, infinite ones count)."""
    finite_or_inf = [v for v in values if not math.isnan(v)]
    if not finite_or_inf:
        return math.nan
    return float(np.percentile(np.asarray(finite_or_inf, dtype=np.float64), q, method="higher"))


@dataclass(frozen=True)
class RssSample:
    service: str
    pid: int
    age_s: float
    """Seconds since the process started."""
    wall_s: float
    rss: int


def rss_growth_mb_per_h(samples: Iterable[RssSample], warmup_s: float,
                        late_half: bool = False) -> dict[str, tuple[float, float]]:
    """Per service: (resident memory growth in MB/h, seconds of samples it rests on).

    A least-squares slope pooled over the service's process lifetimes (each with its own intercept,
    so a restart's fresh process is not read as a drop), leaving out each lifetime's first ``warmup_s``.
    ``late_half``: only the second half (in time) of each lifetime's samples after the warm-up; a leak
    grows as fast there as over the whole, a warm-up flattens out (a soak without kills tells them apart).
    """
    lives: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for s in samples:
        if s.age_s >= warmup_s:
            lives.setdefault(s.service, {}).setdefault(s.pid, []).append((s.wall_s, s.rss / MB))
    out = {}
    for service, by_pid in lives.items():
        num = den = span = 0.0
        for points in by_pid.values():
            if late_half:
                points = [p for p in points if p[0] >= (points[0][0] + points[-1][0]) / 2]
            if len(points) < 3:
                continue
            t, r = np.array(points).T
            num += float(((t - t.mean()) * (r - r.mean())).sum())
            den += float(((t - t.mean()) ** 2).sum())
            span += float(t[-1] - t[0])
        out[service] = (num / den * 3600.0 if den > 0 else math.nan, span)
    return out


def rss_period_peaks_mb(samples: Iterable[RssSample], period_s: float) -> dict[str, list[float]]:
    """Per service: the highest RSS (MB) in each whole ``period_s`` from the first sample on.

    A working set that follows the market's day (a day file growing until midnight, busy hours) is
    periodic: a slope over part of a period reads its phase, the peak of each whole day does not
    (flat peaks: bounded; rising peaks: a leak). Meant for a soak (restarts mix lifetimes)."""
    points = list(samples)
    if not points or period_s <= 0:
        return {}
    start = min(s.wall_s for s in points)
    whole = int((max(s.wall_s for s in points) - start) // period_s)
    peaks: dict[str, list[float]] = {}
    for s in points:
        k = int((s.wall_s - start) // period_s)
        if k < whole:
            row = peaks.setdefault(s.service, [0.0] * whole)
            row[k] = max(row[k], s.rss / MB)
    return peaks


def write_rss_samples(path: Path, samples: Iterable[RssSample]) -> None:
    """Every RSS sample as CSV (service, pid, seconds since the process started, wall time, RSS bytes)."""
    lines = ["service,pid,age_s,wall_s,rss"]
    lines += [f"{s.service},{s.pid},{s.age_s:.1f},{s.wall_s:.1f},{s.rss}" for s in samples]
    path.write_text("\n".join(lines) + "\n")
