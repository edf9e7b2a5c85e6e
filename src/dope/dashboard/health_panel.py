"""The "Model health" panel: the champion's drift per feature and data quality, from ``health.<symbol>``.

It shows the last :class:`~dope.messages.ModelHealth` of the chosen symbol: a headline (alarm in red
with its reason, else "no drift alarm"), the alarm levels, prediction drift and the data-quality
figures, and a table of PSI and KS per feature (and for the predictions), each marked ``ALARM`` when
above its level. It computes nothing: the decoy's monitor did (``docs/loop.md``, "Monitors").
"""

from __future__ import annotations

import html
import math
from typing import Any, Final

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, HTMLTemplateFormatter, TableColumn

from dope.messages import ModelHealth

ALARM_COLOR: Final = "#d62728"
OK_COLOR: Final = "#2ca02c"
_LEVEL_TEMPLATE: Final = ('<span style="color:<%= value === \'ALARM\' ? \'#d62728\' : \'#2ca02c\' %>;'
                          'font-weight:bold"><%= value %></span>')


class ModelHealthPanel:
    """A headline ``Div`` (``model_health``) over a table (source ``drift``, table ``drift_table``)."""

    def __init__(self, width: int) -> None:
        self.source = ColumnDataSource({"feature": [], "psi": [], "ks": [], "status": []}, name="drift")
        self.headline = Div(text="<b>Model health:</b> no report yet", name="model_health", width=width)
        columns = [TableColumn(field="feature", title="feature"), TableColumn(field="psi", title="PSI"),
                   TableColumn(field="ks", title="KS"),
                   TableColumn(field="status", title="status", formatter=HTMLTemplateFormatter(
                       template=_LEVEL_TEMPLATE))]
        self.table = DataTable(source=self.source, columns=columns, width=width, height=200, name="drift_table",
                               index_position=None)
        self.shown: ModelHealth | None = None

    def layout(self) -> Any:
        return column(self.headline, self.table)

    def show(self, report: ModelHealth | None) -> None:
        """Display ``report`` (None: nothing heard for this symbol yet)."""
        if report is self.shown:
            return
        self.shown = report
        if report is None:
            self.headline.text = "<b>Model health:</b> no report yet"
            self.source.data = {key: [] for key in self.source.data}
            return
        self.headline.text = headline(report)
        self.source.data = {key: [] for key in self.source.data}  # BokehJS redraws a table only when its
        self.source.data = drift_rows(report)  # row count changes: through empty, it always does


def headline(report: ModelHealth) -> str:
    """The alarm (or its absence), the levels, prediction drift and data quality, as HTML."""
    if report.alarm:
        state = f'<span style="color:{ALARM_COLOR}"><b>DRIFT ALARM</b>: {html.escape(report.reason)}</span>'
    else:
        state = f'<span style="color:{OK_COLOR}">no drift alarm</span>'
    stale = f' <span style="color:{ALARM_COLOR}"><b>STALE FEED</b></span>' if report.stale else ""
    model = html.escape(report.model_id) or "no champion reference"
    return (f"<b>Model health</b> ({model}, last {report.window} vectors): {state}{stale}<br>"
            f"alarm above PSI {report.drift_psi:g} or KS {report.drift_ks:g}; "
            f"prediction PSI {_figure(report.prediction_psi)}, KS {_figure(report.prediction_ks)}<br>"
            f"<b>Data quality:</b> gap rate {report.gap_rate:.2%}, empty bars {report.empty_rate:.2%}, "
            f"late trades {report.late_trades}, non-finite values {report.nonfinite}")


def drift_rows(report: ModelHealth) -> dict[str, list[Any]]:
    """One row per feature, then one for the predictions (when measured)."""
    rows = list(zip(report.feature_names, report.psi, report.ks, strict=False))
    if report.prediction_psi is not None or report.prediction_ks is not None:
        rows.append(("prediction", _nan(report.prediction_psi), _nan(report.prediction_ks)))
    return {"feature": [name for name, _, _ in rows], "psi": [_rounded(p) for _, p, _ in rows],
            "ks": [_rounded(k) for _, _, k in rows],
            "status": ["ALARM" if p > report.drift_psi or k > report.drift_ks else "ok" for _, p, k in rows]}


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _rounded(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
