"""The HTML report: self-contained (BokehJS inlined, nothing fetched) with the expected plots."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dope.backtest.optimize import grid_search
from dope.backtest.report import load_report_data, render_report, report_data, save_report_data, write_report
from dope.backtest.walkforward import SearchSpec, compare_models, deflate_variants, walk_forward_folds
from dope.plots import drawdown
from tests.unit.test_optimize import CONFIG, SPACE, make_market


@pytest.fixture(scope="module")
def data() -> Any:
    market = make_market(n=96 * 20)
    results = compare_models(market, SearchSpec(SPACE), CONFIG, walk_forward_folds(market.n, 96 * 8, 96 * 4))
    grid = grid_search(market, SPACE, CONFIG)
    return report_data("Test report", market, results, grid, deflate_variants(results), notes="notes here")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _document(html: str) -> dict[str, Any]:
    scripts = re.findall(r'<script type="application/json" id="[^"]*">\s*(.*?)\s*</script>', html, re.S)
    assert len(scripts) == 1
    return dict(next(iter(json.loads(scripts[0]).values())))


def test_report_has_the_expected_plots(data: Any) -> None:
    objects = list(_objects(_document(render_report(data))))
    titles = [o["attributes"]["text"] for o in objects if o["name"] == "Title"]
    assert titles == ["Equity out of sample, against buy and hold", "Drawdown", "Trades on the price",
                      "Sharpe by thresholds: good", "Sharpe by thresholds: noise"]
    counts = Counter(o["name"] for o in objects)
    # 4 equity curves (good, noise, all models, buy and hold) twice (equity, drawdown) + the price line
    renderers = [o for o in objects if o["name"] == "GlyphRenderer"]
    glyphs = Counter(r["attributes"]["glyph"]["name"] for r in renderers)
    assert glyphs == {"Line": 9, "Scatter": 2, "Rect": 2}
    assert counts["DataTable"] == 1
    divs = " ".join(o["attributes"]["text"] for o in objects if o["name"] == "Div")
    for needle in ("Test report", "notes here", "Overfitting", "DSR", "PBO", "CSCV combinations"):
        assert needle in divs
    columns = [o["attributes"]["title"] for o in objects if o["name"] == "TableColumn"]
    assert {"strategy", "sharpe", "psr", "n_trials", "mean_fold_pbo"} <= set(columns)


def test_report_is_self_contained(data: Any) -> None:
    html = render_report(data)
    parser = _Tags()
    parser.feed(html)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all("src" not in attrs for attrs in scripts)  # BokehJS inlined, not fetched
    fetched = [(tag, attrs) for tag, attrs in parser.tags
               if any(k in {"src", "href"} and v and re.match(r"(https?:)?//", v) for k, v in attrs.items())]
    assert fetched == []
    assert "cdn.bokeh.org" not in html


def test_report_data_round_trips_through_a_folder(data: Any, tmp_path: Path) -> None:
    save_report_data(data, tmp_path / "result")
    back = load_report_data(tmp_path / "result")
    assert back.title == data.title and list(back.equity) == list(data.equity)
    np.testing.assert_array_equal(back.equity["good"], data.equity["good"])
    assert back.comparison.equals(data.comparison)
    assert list(back.heatmaps) == ["good", "noise"]
    np.testing.assert_array_equal(back.heatmaps["good"].to_numpy(), data.heatmaps["good"].to_numpy())
    out = write_report(back, tmp_path / "r" / "report.html")
    assert out.read_text(encoding="utf-8").count("Sharpe by thresholds") == 2


def test_trade_markers_and_drawdown(data: Any) -> None:
    assert set(data.trades["side"]) <= {1, -1}
    assert data.trades["time"].is_monotonic_increasing
    assert drawdown(np.array([1.0, 2.0, 1.0, 3.0])).tolist() == [0.0, 0.0, -0.5, 0.0]
