"""The Bokeh document of one browser session: panels fed from the shared ``DashboardState``.

A periodic callback streams what is new since the session's last look into
its ColumnDataSources (with ``rollover``, so a page open for days stays the
same size). Choosing another symbol reloads every panel from the state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, DataTable, Div, HTMLTemplateFormatter, Select, Span, TableColumn
from bokeh.palettes import Category10_10

from dope.dashboard.health_panel import ModelHealthPanel
from dope.dashboard.state import DashboardState
from dope.messages import AnyMessage, Bar, Equity, Fill, Prediction, Score
from dope.plots import add_trade_markers, curves_figure, drawdown, time_figure

UPDATE_MS = 500
SCORECARD_COLUMNS = ("role", "chosen", "misses", "latency_p50_us", "latency_p99_us", "rmse", "hit_rate", "ic",
                     "pnl", "divergence_alarm")
"""The scorecard fields shown, in order (those a scorecard does not have are left out)."""
WIDTH = 900
STATUS_COLORS = {"ok": "#2ca02c", "late": "#ff7f0e", "dead": "#d62728"}
_STATUS_TEMPLATE = ('<span style="color:<%= {ok: \'#2ca02c\', late: \'#ff7f0e\', dead: \'#d62728\'}[value] %>;'
                    'font-weight:bold">&#9679; <%= value %></span>')


@dataclass(frozen=True)
class Thresholds:
    """The trader's thresholds, drawn on the prediction panel."""

    upper: float | None = None
    lower: float | None = None


@dataclass
class Panels:
    """The sources and widgets of one session."""

    bars: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(
        {"time": [], "open": [], "high": [], "low": [], "close": [], "color": [], "width": []}, name="bars"))
    buys: ColumnDataSource = field(default_factory=lambda: ColumnDataSource({"time": [], "price": []}, name="buys"))
    sells: ColumnDataSource = field(default_factory=lambda: ColumnDataSource({"time": [], "price": []},
                                                                            name="sells"))
    chosen: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(
        {"time": [], "prediction": [], "model": []}, name="chosen"))
    realised: ColumnDataSource = field(default_factory=lambda: ColumnDataSource({"time": [], "value": []},
                                                                               name="realised"))
    scores: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(
        {"time": [], "prediction": [], "model": [], "color": []}, name="scores"))
    equity: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(
        {"time": [], "equity": [], "buy_and_hold": [], "drawdown": [], "bh_drawdown": []}, name="equity"))
    health: ColumnDataSource = field(default_factory=lambda: ColumnDataSource(
        {"service": [], "status": [], "age_s": [], "rate": [], "problems": [], "counters": []}, name="health"))
    scorecards: ColumnDataSource = field(default_factory=lambda: ColumnDataSource({"model": []},
                                                                                 name="scorecards"))


class Session:
    """One browser tab: its panels, its symbol, and what it has already shown."""

    def __init__(self, doc: Document, state: DashboardState, thresholds: Thresholds, rollover: int) -> None:
        self.doc, self.state, self.thresholds, self.rollover = doc, state, thresholds, rollover
        self.panels = Panels()
        self.last_bar: Bar | None = None
        self.seen: dict[str, int] = {}
        self.colors: dict[str, str] = {}
        symbols = state.symbols()
        self.symbol = symbols[0] if symbols else ""
        self.selector = Select(title="Symbol", value=self.symbol, options=symbols, name="symbol")
        self.selector.on_change("value", lambda _attr, _old, new: self.show(new))
        self.risk = Div(text="", name="risk")
        self.feed = Div(text="", name="feed", width=WIDTH)
        self.model_health = ModelHealthPanel(WIDTH)
        self.doc.add_root(self._layout())
        self.doc.title = "DOPE dashboard"
        self.update()
        self.doc.add_periodic_callback(self.update, UPDATE_MS)

    def show(self, symbol: str) -> None:
        """Switch to ``symbol``: clear the panels and reload them from the state."""
        self.symbol = symbol
        self.seen.clear()
        self.last_bar = None
        for name in ("bars", "buys", "sells", "chosen", "realised", "scores", "equity"):
            source: ColumnDataSource = getattr(self.panels, name)
            source.data = {key: [] for key in source.data}
        self.update()

    def update(self) -> None:
        """Stream what is new for the current symbol; refresh health, scorecards and the symbol list."""
        symbols = self.state.symbols()
        if symbols != list(self.selector.options):
            self.selector.options = symbols
        if not self.symbol and symbols:
            self.symbol = self.selector.value = symbols[0]
        for kind in ("bar", "prediction", "score", "fill", "equity"):
            self._stream(kind)
        self._refresh_tables()

    def _stream(self, kind: str) -> None:
        items = self.state.since(self.symbol, kind, self.seen.get(kind, 0))
        if not items:
            return
        self.seen[kind] = items[-1][0]
        messages = [msg for _, msg in items]
        getattr(self, f"_stream_{kind}")(messages)

    def _stream_bar(self, bars: list[AnyMessage]) -> None:
        rows = [b for b in bars if isinstance(b, Bar)]
        if not rows:
            return
        self.panels.bars.stream({
            "time": [b.open_time + b.interval_ms / 2 for b in rows], "open": [b.open for b in rows],
            "high": [b.high for b in rows], "low": [b.low for b in rows], "close": [b.close for b in rows],
            "color": ["#2ca02c" if b.close >= b.open else "#d62728" for b in rows],
            "width": [b.interval_ms * 0.8 for b in rows],
        }, rollover=self.rollover)
        self._stream_realised(rows)

    def _stream_realised(self, bars: list[Bar]) -> None:
        """The log return each bar realised (what a prediction made at the previous close was about).

        Only across adjacent bars: over a gap in the data there is no "next bar" return."""
        times, values = [], []
        for bar in bars:
            last = self.last_bar
            if last is not None and last.open_time + last.interval_ms == bar.open_time and last.close > 0:
                times.append(bar.open_time)
                values.append(math.log(bar.close / last.close))
            self.last_bar = bar
        if times:
            self.panels.realised.stream({"time": times, "value": values}, rollover=self.rollover)

    def _stream_prediction(self, predictions: list[AnyMessage]) -> None:
        rows = [p for p in predictions if isinstance(p, Prediction) and p.prediction is not None]
        if rows:
            self.panels.chosen.stream({"time": [p.event_time + 1 for p in rows],
                                       "prediction": [p.prediction for p in rows],
                                       "model": [p.model_id for p in rows]}, rollover=self.rollover)

    def _stream_score(self, scores: list[AnyMessage]) -> None:
        rows = [s for s in scores if isinstance(s, Score) and math.isfinite(s.prediction)]
        if rows:
            self.panels.scores.stream({"time": [s.event_time + 1 for s in rows],
                                       "prediction": [s.prediction for s in rows],
                                       "model": [s.model_id for s in rows],
                                       "color": [self._color(s.model_id) for s in rows]}, rollover=self.rollover)

    def _stream_fill(self, fills: list[AnyMessage]) -> None:
        for side, source in (("BUY", self.panels.buys), ("SELL", self.panels.sells)):
            rows = [f for f in fills if isinstance(f, Fill) and f.side.upper() == side]
            if rows:
                source.stream({"time": [f.event_time for f in rows], "price": [f.price for f in rows]},
                              rollover=self.rollover)

    def _stream_equity(self, reports: list[AnyMessage]) -> None:
        rows = [e for e in reports if isinstance(e, Equity)]
        if not rows:
            return
        data = self.panels.equity.data
        equity = list(data["equity"]) + [e.equity for e in rows]
        held = list(data["buy_and_hold"]) + [e.buy_and_hold for e in rows]
        self.panels.equity.stream({
            "time": [e.open_time for e in rows], "equity": [e.equity for e in rows],
            "buy_and_hold": [e.buy_and_hold for e in rows],
            "drawdown": list(drawdown(equity)[-len(rows):]), "bh_drawdown": list(drawdown(held)[-len(rows):]),
        }, rollover=self.rollover)

    def _refresh_tables(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        rows = self.state.health_rows(now_ms)
        self.panels.health.data = {key: [r[key] for r in rows] for key in self.panels.health.data}
        self._refresh_scorecards()
        self.model_health.show(self.state.model_health(self.symbol))
        kill = self.state.kill_switch()
        alarms = "".join(f' <span style="color:#d62728"><b>ALARM</b> {a}</span>' for a in self.state.alarms())
        self.risk.text = (f'<b>Trader risk:</b> <span style="color:{"#d62728" if kill else "#2ca02c"}">'
                          f'{"KILL SWITCH ON: flat, no new entries" if kill else "normal"}</span>{alarms}')
        self.feed.text = self._feed_text(now_ms)

    def _feed_text(self, now_ms: int) -> str:
        """Feed lag of the shown symbol (wall clock minus its last bar's close) and the bus' own counters."""
        bus = self.state.bus_counters
        lag = "no bar yet"
        if self.last_bar is not None:
            behind_s = (now_ms - self.last_bar.close_time - 1) / 1000
            lag = (f"{behind_s:.1f} s behind the wall clock" if abs(behind_s) < 3_600 else
                   f"at {_utc(self.last_bar.open_time)} (replayed or simulated time)")
        problems = ", ".join(f"{k.removeprefix('bus.')} {v}" for k, v in sorted(bus.items())
                             if v and k != "bus.received")
        return (f"<b>Feed:</b> last {self.symbol or '-'} bar {lag}; <b>bus:</b> "
                f"{bus.get('bus.received', 0)} messages received, {problems or 'no gaps, rejects or duplicates'}")

    def _refresh_scorecards(self) -> None:
        cards = self.state.scorecards
        present = {k for card in cards.values() for k in card}
        columns = ["model", *[c for c in SCORECARD_COLUMNS if c in present]]
        data = {c: [_cell(card.get(c, model) if c != "model" else model) for model, card in sorted(cards.items())]
                for c in columns}
        if set(data) != set(self.panels.scorecards.data) or data != dict(self.panels.scorecards.data):
            self.panels.scorecards.data = data
            self.scorecard_table.columns = [TableColumn(field=c, title=c) for c in columns]

    def _color(self, model: str) -> str:
        return self.colors.setdefault(model, Category10_10[len(self.colors) % 10])

    def _layout(self) -> Any:
        price = self._price_figure()
        return column(
            Div(text="<h2>DOPE — live</h2>", name="title"),
            row(self.selector, self.risk), self.feed,
            price, self._prediction_figure(price.x_range), self._equity_figure(price.x_range),
            self._drawdown_figure(price.x_range),
            Div(text="<b>Model scorecards</b>"), self._scorecard_table(), self.model_health.layout(),
            Div(text="<b>Services</b>"), self._health_table(),
            name="dashboard")

    def _price_figure(self) -> Any:
        fig = time_figure("Price, buys and sells", 320, name="price_plot")
        fig.segment("time", "high", "time", "low", color="color", source=self.panels.bars)
        fig.vbar("time", "width", "open", "close", fill_color="color", line_color="color", source=self.panels.bars)
        add_trade_markers(fig, self.panels.buys, self.panels.sells)
        fig.legend.location = "top_left"
        return fig

    def _prediction_figure(self, x_range: Any) -> Any:
        fig = time_figure("Predictions against the return that followed", 260, x_range, name="prediction_plot")
        fig.line("time", "value", source=self.panels.realised, color="gray", legend_label="realised log return")
        fig.scatter("time", "prediction", source=self.panels.scores, color="color", size=4, alpha=0.6,
                    legend_label="model scores")
        fig.line("time", "prediction", source=self.panels.chosen, color="black", line_width=2,
                 legend_label="chosen prediction")
        for value, color in ((self.thresholds.upper, "#2ca02c"), (self.thresholds.lower, "#d62728")):
            if value is not None:
                fig.add_layout(Span(location=value, dimension="width", line_color=color, line_dash="dashed"))
        fig.legend.location = "top_left"
        return fig

    def _equity_figure(self, x_range: Any) -> Any:
        return curves_figure(self.panels.equity, {"strategy": "equity", "buy-and-hold": "buy_and_hold"},
                             "Equity against buy-and-hold", height=240, x_range=x_range, y_label="equity",
                             name="equity_plot")

    def _drawdown_figure(self, x_range: Any) -> Any:
        return curves_figure(self.panels.equity, {"strategy": "drawdown", "buy-and-hold": "bh_drawdown"},
                             "Drawdown", height=180, x_range=x_range, y_label="drawdown", legend="bottom_left",
                             name="drawdown_plot")

    def _scorecard_table(self) -> Any:
        self.scorecard_table = DataTable(source=self.panels.scorecards, columns=[TableColumn(field="model")],
                                         width=WIDTH, height=180, name="scorecard_table", index_position=None)
        return self.scorecard_table

    def _health_table(self) -> Any:
        columns = [TableColumn(field="service", title="service"),
                   TableColumn(field="status", title="status", formatter=HTMLTemplateFormatter(
                       template=_STATUS_TEMPLATE)),
                   TableColumn(field="age_s", title="last heartbeat (s ago)"),
                   TableColumn(field="rate", title="busiest counter /s"),
                   TableColumn(field="problems", title="rejects, gaps, drops"),
                   TableColumn(field="counters", title="counters", width=420)]
        return DataTable(source=self.panels.health, columns=columns, width=WIDTH, height=200, name="health_table",
                         index_position=None)


def _utc(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict | list):
        return str(value)
    return value
