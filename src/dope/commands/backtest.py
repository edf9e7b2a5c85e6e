"""``dope backtest``: thresholds on a predictions file against stored bars, beside the baselines."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from dope.commands.options import add_stored_bars_arguments, open_store, time_option
from dope.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from dope.backtest import BacktestConfig, BacktestResult
    from dope.store import BarStore

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope backtest``."""
    parser.add_argument("--predictions", required=True,
                        help="Parquet (or CSV) file with columns open_time (ms) and prediction")
    add_stored_bars_arguments(parser)
    parser.add_argument("--upper", type=float, default=0.0, help="buy above this prediction (default 0)")
    parser.add_argument("--lower", type=float, default=0.0, help="sell below this prediction (default 0)")
    parser.add_argument("--fee", type=float, default=0.001, help="fee rate per side (default 0.001)")
    parser.add_argument("--slippage-bps", type=float, default=0.0, help="slippage in basis points (default 0)")
    parser.add_argument("--short", action="store_true", help="long/short instead of long/flat")
    parser.add_argument("--cash", type=float, default=10_000.0, help="initial cash (default 10000)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of equity per position (default 1)")
    parser.add_argument("--engine", choices=("vectorized", "event"), default="vectorized",
                        help="backtest path (both give the same answer; default vectorized)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_in_sample_argument(parser)


def add_in_sample_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-in-sample`` of ``dope backtest`` and ``dope optimize``."""
    parser.add_argument("--allow-in-sample", action="store_true",
                        help="use predictions of bars opening before their model's trained_until_ms "
                             "(in sample: the model has seen that period); refused by default")


def run(args: argparse.Namespace) -> int:
    """Join predictions with the stored bars, backtest, print the metrics beside the baselines."""
    store, interval_ms = open_store(args)
    bars = read_bars(store, args.symbol, interval_ms, time_option(args.start), time_option(args.end))
    joined = join_predictions(bars, read_predictions(Path(args.predictions), args.allow_in_sample))
    results = _backtest(joined, _config(args), interval_ms, args.engine)
    print(_as_json(args, interval_ms, results) if args.json else _as_table(args, results))
    return 0


def read_predictions(path: Path, allow_in_sample: bool = False) -> pd.DataFrame:
    """A predictions file as a frame of ``open_time`` (int64) and ``prediction`` (float64).

    Rows for bars opening before their ``trained_until_ms`` are refused (see :func:`check_out_of_sample`).
    """
    import pandas as pd

    if not path.exists():
        raise UserError(f"{path}: no such predictions file")
    try:
        frame = pd.read_csv(path) if path.suffix in {".csv", ".gz"} else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise UserError(f"{path}: cannot read predictions: {exc}") from None
    missing = {"open_time", "prediction"} - set(frame.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need open_time, prediction)")
    if frame["open_time"].duplicated().any():
        raise UserError(f"{path}: open_time {frame['open_time'][frame['open_time'].duplicated()].iloc[0]} "
                        "appears more than once")
    check_out_of_sample(path, frame, allow_in_sample)
    return frame[["open_time", "prediction"]].astype({"open_time": "int64", "prediction": "float64"})


def check_out_of_sample(path: Path, frame: pd.DataFrame, allow_in_sample: bool) -> None:
    """Refuse (or, with ``allow_in_sample``, warn about) rows opening before their ``trained_until_ms``.

    ``dope predict`` writes ``model_id`` and ``trained_until_ms`` on every row. A file (or a row)
    without ``trained_until_ms`` is of unknown provenance: it is used, with a warning saying so.
    """
    import pandas as pd

    until = (pd.to_numeric(frame["trained_until_ms"], errors="coerce") if "trained_until_ms" in frame.columns
             else pd.Series(float("nan"), index=frame.index))
    unknown = int(until.isna().sum())
    if unknown:
        log.warning("%s: %d of %d prediction(s) have no trained_until_ms (not written by `dope predict`): "
                    "provenance unknown, nothing shows they are out of sample", path, unknown, len(frame))
    inside = frame["open_time"].astype("int64") < until
    if not inside.any():
        return
    first = frame.assign(trained_until_ms=until)[inside].sort_values("open_time").iloc[0]
    model = first["model_id"] if "model_id" in frame.columns else "an unnamed model"
    trained_until = int(first["trained_until_ms"])
    message = (f"{path}: {int(inside.sum())} prediction(s) for bars opening before their model finished "
               f"training, the first at {_iso(int(first['open_time']))} by {model}, trained until "
               f"{_iso(trained_until)} (trained_until_ms {trained_until}): in sample")
    if not allow_in_sample:
        raise UserError(f"{message}; pass --allow-in-sample to use them anyway")
    log.warning("%s (used: --allow-in-sample)", message)


def _iso(time_ms: int) -> str:
    import pandas as pd

    return pd.Timestamp(time_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def join_predictions(bars: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Bars with their prediction (NaN where the file has none: those bars hold)."""
    joined = bars.merge(predictions, on="open_time", how="left", validate="one_to_one")
    unmatched = int((~predictions["open_time"].isin(bars["open_time"])).sum())
    if unmatched:
        log.warning("%d predictions have no stored bar in the range (ignored)", unmatched)
    return joined


def read_bars(store: BarStore, symbol: str, interval_ms: int, start: int | None, end: int | None) -> pd.DataFrame:
    """The stored bars a backtest runs on: at least two, of a stored symbol."""
    store.require_symbol(symbol, interval_ms)
    bars = store.read_bars(symbol, interval_ms, start, end)
    if len(bars) < 2:
        raise UserError(f"{symbol}: {len(bars)} stored bar(s) in that range; a backtest needs at least 2")
    return bars


def _config(args: argparse.Namespace) -> BacktestConfig:
    from dope.backtest import BacktestConfig

    try:
        return BacktestConfig(upper=args.upper, lower=args.lower, fee_rate=args.fee,
                              slippage_bps=args.slippage_bps, allow_short=args.short, initial_cash=args.cash,
                              fraction=args.fraction)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _backtest(joined: pd.DataFrame, config: BacktestConfig, interval_ms: int,
              engine: str) -> dict[str, BacktestResult]:
    from dope.backtest import buy_and_hold, run_event, run_vectorized, zero_baseline

    o, c, t = joined["open"].to_numpy(), joined["close"].to_numpy(), joined["open_time"].to_numpy()
    p = joined["prediction"].to_numpy()
    try:
        main = (run_event(joined, p, config, interval_ms=interval_ms) if engine == "event"
                else run_vectorized(o, c, p, config, times=t, interval_ms=interval_ms))
        return {"strategy": main,
                "buy_and_hold": buy_and_hold(o, c, config, times=t, interval_ms=interval_ms),
                "zero": zero_baseline(o, c, config, times=t, interval_ms=interval_ms)}
    except ValueError as exc:
        raise UserError(f"bad bars: {exc}") from None


def _as_table(args: argparse.Namespace, results: dict[str, BacktestResult]) -> str:
    import pandas as pd

    table = pd.DataFrame({name: r.metrics for name, r in results.items()})
    header = (f"{args.symbol} {len(results['strategy'].equity)} bars, upper {args.upper}, lower {args.lower}, "
              f"fee {args.fee}, slippage {args.slippage_bps} bps, {'long/short' if args.short else 'long/flat'}")
    return header + "\n" + table.to_string(float_format=lambda v: f"{v:.6g}")


def _as_json(args: argparse.Namespace, interval_ms: int, results: dict[str, BacktestResult]) -> str:
    import msgspec

    body = {"symbol": args.symbol, "interval_ms": interval_ms,
            "config": msgspec.to_builtins(results["strategy"].config),
            **{name: {k: _json_number(v) for k, v in r.metrics.items()} for name, r in results.items()}}
    return json.dumps(body, indent=2)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value
