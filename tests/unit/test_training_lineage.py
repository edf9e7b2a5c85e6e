"""Lineage of a registered model: the bars' content hash and the code version (``dope.training.lineage``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dope
from dope.bars.schema import BAR_COLUMNS
from dope.market.config import SyntheticConfig
from dope.market.synthetic import configured_bars
from dope.training.lineage import bars_sha256, code_version


@pytest.fixture
def bars() -> pd.DataFrame:
    start = 1_700_000_000_000
    return configured_bars(SyntheticConfig(), ["BTCUSDT"], start, start + 200 * 10_000, 10_000)["BTCUSDT"]


def test_equal_bars_give_equal_hashes_whatever_the_frame_around_them(bars: pd.DataFrame) -> None:
    copy = bars.copy()
    copy.index = copy.index + 1_000
    copy["extra"] = 1.0
    copy = copy[["extra", *reversed(BAR_COLUMNS)]]
    assert bars_sha256(copy) == bars_sha256(bars)
    assert re.fullmatch(r"[0-9a-f]{64}", bars_sha256(bars))


@pytest.mark.parametrize("column", ["close", "volume", "count", "open_time", "empty", "last_trade_id"])
def test_any_changed_value_changes_the_hash(bars: pd.DataFrame, column: str) -> None:
    changed = bars.copy()
    old = changed[column].iloc[57]
    kind = changed[column].dtype.kind
    new = not old if kind == "b" else (np.nextafter(old, np.inf) if kind == "f" else old + 1)
    changed.loc[changed.index[57], column] = new  # one ulp for a float: the smallest change there is
    assert bars_sha256(changed) != bars_sha256(bars)


def test_dropped_rows_change_the_hash(bars: pd.DataFrame) -> None:
    assert bars_sha256(bars.iloc[:-1]) != bars_sha256(bars)
    assert bars_sha256(bars.iloc[1:]) != bars_sha256(bars)


def test_the_hash_follows_the_documented_byte_order(bars: pd.DataFrame) -> None:
    digest = hashlib.sha256()
    for name in BAR_COLUMNS:
        values = bars[name].to_numpy()
        raw = values.astype("<u1" if values.dtype == bool else values.dtype.newbyteorder("<")).tobytes()
        digest.update(name.encode() + b"\0" + len(values).to_bytes(8, "little") + raw)
    assert bars_sha256(bars) == digest.hexdigest()


@pytest.fixture
def fresh_code_version() -> Iterator[None]:
    code_version.cache_clear()
    yield
    code_version.cache_clear()


def test_code_version_names_the_commit_of_this_checkout(fresh_code_version: None) -> None:
    version = code_version()
    assert version["dope"] == dope.__version__
    assert re.fullmatch(r"[0-9a-f]{40}", version["git_commit"])
    assert isinstance(version["git_dirty"], bool)


def test_code_version_without_git_is_the_package_version(fresh_code_version: None, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to run
    assert code_version() == {"dope": dope.__version__, "git_commit": None, "git_dirty": None}


def test_code_version_of_an_installed_package_is_the_package_version(fresh_code_version: None, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dope, "__file__", str(tmp_path / "site-packages" / "dope" / "__init__.py"))
    assert code_version() == {"dope": dope.__version__, "git_commit": None, "git_dirty": None}
