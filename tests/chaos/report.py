"""The markdown of a chaos run's figures, and its place in ``docs/reliability.md`` (between two markers)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.chaos.measures import percentile

if TYPE_CHECKING:
    from tests.chaos.chaos import ChaosSettings, Figures

BEGIN, END = "<!-- chaos-figures -->", "<!-- /chaos-figures -->"


def _s(value: float) -> str:
    return "never" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.2f} s"


def _kills(s: ChaosSettings) -> str:
    if math.isinf(s.kill_period_s):
        return "no kill (a soak)"
    return f"a kill every ~{s.kill_period_s:g} s ({s.pair_share:.0%} of them two services at once)"


def _mb_per_h(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f} MB/h"


def _day_peaks(fig: Figures, service: str) -> str:
    """Each whole market day's RSS peak, and the growth from the first to the last (MB/h) when two or more."""
    peaks = fig.rss_day_peaks.get(service, [])
    text = " / ".join(f"{mb:.0f}" for mb in peaks)
    if len(peaks) >= 2:
        return f"{text} MB ({_mb_per_h(fig.memory_growth()[service])})"
    return f"{text} MB" if peaks else "-"


def _spread(values: list[float]) -> str:
    return " / ".join(_s(percentile(values, q)) for q in (50, 99, 100))


def figures_table(fig: Figures) -> str:
    """The summary table, then one row per service."""
    st, s = fig.settings.stack, fig.settings
    pairs = len({k.at for k in fig.kills if sum(j.at == k.at for j in fig.kills) == 2})
    o = fig.orders
    lines = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {fig.minutes:.1f} min of chaos, synthetic "
        f"market seed {st.seed} at {st.speed:g}x, models {', '.join(st.models)}, {_kills(s)}, an order-path "
        f"fault every ~{s.fault_period_s:g} s, the first {s.rss_warmup_s:g} s of every process left out of the "
        f"memory slopes; `dope up` exit status {fig.up_exit}.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| bars lost (store vs an uninterrupted run) | {fig.bars.lost} of {fig.bars.reference} | 0 |",
        f"| bars different / not in the reference | {fig.bars.different} / {fig.bars.extra} | 0 / 0 |",
        f"| decisions lost (stored bars without one) | {fig.decisions[1]} of {fig.decisions[0]} | 0 |",
        f"| decisions on the bus with a prediction | {fig.predicted[1]} of {fig.predicted[0]} | - |",
        f"| orders executed twice (fake exchange) | {o['doubled']} of {o['orders']} | 0 |",
        f"| orders re-sent / executed but not booked | {o['resent']} / {o['unbooked']} | - |",
        f"| exchange faults injected / met by an order request | {o['faults']} / {o['faults_met']} | - |",
        f"| SIGKILLs (of them, pairs) | {len(fig.kills)} ({pairs}) | - |",
        f"| kill to healthy p50 / p99 / max | {_spread(fig.healthy())} | p99 <= 5 s |",
        f"| kill to handling new events p50 / p99 / max | {_spread([k.working_s for k in fig.kills])} | - |",
        "",
        "| service | kills | healthy p99 | new events p99 | longest silence, not killed | RSS growth "
        "| RSS growth, 2nd half | RSS lifetime covered | RSS peak per market day |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for service in sorted({k.service for k in fig.kills} | set(fig.rss) | set(fig.silences)):
        kills = [k for k in fig.kills if k.service == service]
        growth, span = fig.rss.get(service, (math.nan, 0.0))
        late, _ = fig.rss_late.get(service, (math.nan, 0.0))
        lines.append(f"| {service} | {len(kills)} | {_s(percentile([k.healthy_s for k in kills], 99))} | "
                     f"{_s(percentile([k.working_s for k in kills], 99))} | {_s(fig.silences.get(service, math.nan))} | "
                     f"{_mb_per_h(growth)} | {_mb_per_h(late)} | {span / 60:.1f} min | "
                     f"{_day_peaks(fig, service)} |")
    return "\n".join(lines) + "\n"


def write_into_doc(doc: Path, table: str) -> None:
    """Put ``table`` between the figure markers of ``doc`` (appended, with the markers, if it has none)."""
    text = doc.read_text() if doc.exists() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)
