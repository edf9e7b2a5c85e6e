"""The HTML report in a real browser (Debian's Chromium, Playwright): the comparison table shows every column
whole and leaves no empty band under its rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dope.backtest.optimize import grid_search
from dope.backtest.report import report_data, write_report
from dope.backtest.walkforward import SearchSpec, compare_models, deflate_variants, walk_forward_folds
from tests.e2e.dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.unit.test_optimize import CONFIG, SPACE, make_market

# Bokeh renders the table (SlickGrid) inside shadow roots: walk them all.
_TABLE_JS = """() => {
  const found = {headers: [], cells: [], rows: []};
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (el.classList.contains('slick-header-column')) {
        const name = el.querySelector('.slick-column-name');
        found.headers.push([name.textContent, name.scrollWidth, el.clientWidth]);
      } else if (el.classList.contains('slick-cell')) {
        found.cells.push([el.textContent, el.scrollWidth, el.clientWidth]);
      } else if (el.classList.contains('slick-row')) {
        found.rows.push(el.getBoundingClientRect().bottom);
      }
    }
  };
  walk(document);
  return found;
}"""


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    market = make_market(n=96 * 20)
    results = compare_models(market, SearchSpec(SPACE), CONFIG, walk_forward_folds(market.n, 96 * 8, 96 * 4))
    data = report_data("Report", market, results, grid_search(market, SPACE, CONFIG), deflate_variants(results))
    path = write_report(data, tmp_path / "report.html")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1000, "height": 900})
        page.goto(path.as_uri())
        page.wait_for_selector(".slick-header-column", timeout=30_000)
        yield page
        chromium.close()


def test_the_comparison_table_is_whole_and_leaves_no_empty_band(page: Any) -> None:
    table = page.evaluate(_TABLE_JS)
    assert len(table["headers"]) == 15 and len(table["rows"]) == 4
    cut = [text for text, needed, shown in table["headers"] + table["cells"] if needed > shown]
    assert cut == []
    next_heading = page.locator("text=Overfitting: walk-forward").bounding_box()
    assert next_heading["y"] - max(table["rows"]) < 40  # the heading's own margin, no empty band
