"""Grid sweeps and walk-forward folds on a local Dask cluster give exactly the serial results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dope.backtest.optimize import grid_search
from dope.backtest.parallel import DaskRunner, SerialRunner, open_runner
from dope.backtest.walkforward import SearchSpec, compare_models, walk_forward_folds
from tests.unit.test_optimize import CONFIG, SPACE, make_market

pytestmark = pytest.mark.timeout(120)


def test_dask_runs_give_the_serial_results() -> None:
    market = make_market(n=96 * 16)
    folds = walk_forward_folds(market.n, 96 * 8, 96 * 4)
    spec = SearchSpec(SPACE)
    with SerialRunner(progress=False) as serial:
        grid_serial = grid_search(market, SPACE, CONFIG, runner=serial)
        wf_serial = compare_models(market, spec, CONFIG, folds, serial)
    with open_runner(workers=2, progress=False) as runner:
        assert isinstance(runner, DaskRunner)
        address = runner.client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:")
        grid_dask = grid_search(market, SPACE, CONFIG, runner=runner)
        wf_dask = compare_models(market, spec, CONFIG, folds, runner)
        # an existing cluster, reached by its address, gives the same again
        with open_runner(scheduler=address, progress=False) as remote:
            grid_remote = grid_search(market, SPACE, CONFIG, runner=remote, chunks=3)
    pd.testing.assert_frame_equal(grid_serial.table, grid_dask.table)
    pd.testing.assert_frame_equal(grid_serial.table, grid_remote.table)
    np.testing.assert_array_equal(grid_serial.period_returns, grid_dask.period_returns)
    assert grid_serial.pbo is not None and grid_dask.pbo is not None
    assert grid_serial.pbo.pbo == grid_dask.pbo.pbo
    assert list(wf_serial) == list(wf_dask)
    for name, serial_result in wf_serial.items():
        pd.testing.assert_frame_equal(serial_result.folds, wf_dask[name].folds)
        np.testing.assert_array_equal(serial_result.result.equity, wf_dask[name].result.equity)
