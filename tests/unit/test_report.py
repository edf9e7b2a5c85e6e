"""The HTML report: self-contained (BokehJS inlined, nothing fetched) with the expected plots."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from html import unescape
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
def grid() -> Any:
    return grid_search(make_market(n=96 * 20), SPACE, CONFIG)


@pytest.fixture(scope="module")
def data(grid: Any) -> Any:
    market = make_market(n=96 * 20)
    results = compare_models(market, SearchSpec(SPACE), CONFIG, walk_forward_folds(market.n, 96 * 8, 96 * 4))
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
                      "Sharpe by thresholds: good", "outlined: the chosen upper 0.004, lower -0.004",
                      "Sharpe by thresholds: noise", "outlined: the chosen upper 0, lower -0.004"]
    counts = Counter(o["name"] for o in objects)
    # 4 equity curves (good, noise, all models, buy and hold) twice (equity, drawdown) + the price line
    renderers = [o for o in objects if o["name"] == "GlyphRenderer"]
    glyphs = Counter(r["attributes"]["glyph"]["name"] for r in renderers)
    assert glyphs == {"Line": 9, "Scatter": 2, "Rect": 4}  # a heatmap and its chosen cell, twice
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


def _by_name(objects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["name"] == name]


def _heatmaps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each heatmap figure by the model its title names."""
    figures = {}
    for fig in _by_name(objects, "Figure"):
        title = fig["attributes"]["title"]["attributes"]["text"]
        if title.startswith("Sharpe by thresholds: "):
            figures[title.removeprefix("Sharpe by thresholds: ")] = fig
    return figures


def test_each_heatmap_has_a_colour_bar_and_outlines_the_chosen_cell(data: Any, grid: Any) -> None:
    objects = list(_objects(_document(render_report(data))))
    heatmaps = _heatmaps(objects)
    assert sorted(heatmaps) == ["good", "noise"]
    for model, fig in heatmaps.items():
        inside = list(_objects(fig))
        [bar] = _by_name(inside, "ColorBar")
        renderers = {o["attributes"].get("name"): o["attributes"] for o in _by_name(inside, "GlyphRenderer")}
        cells = renderers[None]["glyph"]["attributes"]["fill_color"]["transform"]
        assert cells["name"] == "LinearColorMapper"
        assert bar["attributes"]["color_mapper"]["id"] == cells["id"]  # the bar is the scale of the cells
        rows = grid.table[grid.table["model"] == model]
        best = rows.loc[rows[grid.objective].idxmax()]
        marker = renderers["chosen_cell"]["data_source"]["attributes"]["data"]["entries"]
        assert dict(marker) == {"x": [f"{best['upper']:g}"], "y": [f"{best['lower']:g}"]}
    assert data.chosen[grid.best.model] == (grid.best.upper, grid.best.lower)


def test_the_chosen_cells_survive_the_results_folder(data: Any, tmp_path: Path) -> None:
    save_report_data(data, tmp_path / "result")
    assert load_report_data(tmp_path / "result").chosen == data.chosen


def test_the_comparison_table_shows_every_column_whole_and_no_empty_band(data: Any) -> None:
    objects = list(_objects(_document(render_report(data))))
    [table] = [o["attributes"] for o in _by_name(objects, "DataTable")]
    columns = [c["attributes"] for c in table["columns"]]
    assert [c["title"] for c in columns] == [str(c) for c in data.comparison.columns]
    assert table["autosize_mode"] == "none"  # "force_fit" squeezes the columns into the table's width
    source = table["source"]["attributes"]["data"]["entries"]
    cells = {k: [unescape(str(v)) for v in values] for k, values in source}
    assert len(cells["strategy"]) == len(data.comparison)
    for column in columns:  # 7 px per character of the 13 px font, at the least
        assert column["width"] >= 7 * max(len(t) for t in [column["title"], *cells[column["field"]]])
    assert table["width"] >= sum(c["width"] for c in columns)
    row_height = table.get("row_height", 25)
    rows_and_header = (len(data.comparison) + 1) * row_height
    assert rows_and_header <= table["height"] < rows_and_header + row_height // 2
