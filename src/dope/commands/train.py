"""``dope train MODEL``: walk-forward evaluation on stored bars, then fit on the whole range and register.

    dope train lightgbm --symbol BTCUSDT --interval 10s --start 2024-01-01 --end 2024-02-01
    dope train random_forest --symbol ETHUSDT --params n_estimators=50 max_depth=8 --context BTCUSDT
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import TYPE_CHECKING, Any

from dope.errors import UserError

if TYPE_CHECKING:
    from dope.training.pipeline import TrainOutcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope train``."""
    parser.add_argument("model", metavar="MODEL",
                        help="model kind: random_forest, lstm, lightgbm, ridge, momentum, zero, online_ridge, an "
                             "installed plugin's (`dope models kinds`) or module:Class")
    parser.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    parser.add_argument("--interval", help="stored bar interval (default: [bars] interval, 10s)")
    parser.add_argument("--start", help="first bar (open time), ISO 8601 UTC or epoch ms (default: first stored)")
    parser.add_argument("--end", help="end (exclusive), ISO 8601 UTC or epoch ms (default: last stored)")
    parser.add_argument("--horizon", type=int, default=1, help="target: log return over this many bars (default 1)")
    parser.add_argument("--folds", type=int, default=5, help="walk-forward folds (default 5)")
    parser.add_argument("--embargo", type=int, default=0, help="extra rows between train and test (default 0)")
    parser.add_argument("--max-train-rows", type=int, default=None,
                        help="rows one fit sees, by stride or most recent (default: per model, see docs/training.md)")
    parser.add_argument("--context", nargs="*", default=[], metavar="SYMBOL",
                        help="other symbols whose returns are features, e.g. BTCUSDT for ETHUSDT")
    parser.add_argument("--params", nargs="*", default=[], metavar="KEY=VALUE", help="model parameters")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--registry", help="registry folder (default: [registry] path)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: min(2, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--config", help="TOML configuration file")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n_estimators=50", "max_depth=None"]`` -> ``{"n_estimators": 50, "max_depth": None}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"bad parameter {item!r}: expected KEY=VALUE, e.g. n_estimators=50")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text
    return params


def run(args: argparse.Namespace) -> int:
    """Evaluate, fit, register; print the metrics against the zero baseline."""
    from dope.training.threads import limit_threads

    limit_threads(args.threads)
    from dope.commands.options import open_store, time_option
    from dope.commands.predict import open_registry
    from dope.training.pipeline import TrainRequest, train

    store, interval_ms = open_store(args)
    request = TrainRequest(
        kind=args.model, symbol=args.symbol, interval_ms=interval_ms, start_ms=time_option(args.start),
        end_ms=time_option(args.end), params=parse_params(args.params), horizon=args.horizon, folds=args.folds,
        embargo=args.embargo, max_train_rows=args.max_train_rows, context_symbols=tuple(args.context))
    began = time.perf_counter()
    outcome = train(store, open_registry(args), request, progress=not args.no_progress)
    _report(outcome, time.perf_counter() - began)
    return 0


def _report(outcome: TrainOutcome, seconds: float) -> None:
    result = outcome.result
    print(f"walk-forward over {outcome.rows} rows, {len(result.folds)} folds, "
          f"{result.metrics.n} bars out of sample:")
    print(f"  {'':6} {'rmse':>12} {'dir.acc':>8} {'IC':>8}")
    for name, m in (("model", result.metrics), ("zero", result.baseline)):
        print(f"  {name:6} {m.rmse:12.6g} {m.directional_accuracy:8.4f} {m.ic:8.4f}")
    verdict = "beats" if result.metrics.rmse < result.baseline.rmse else "does NOT beat"
    print(f"  the model {verdict} the zero-return baseline on RMSE")
    print(f"registered {outcome.model_id} (evaluation {outcome.evaluate_seconds:.1f} s, "
          f"final fit {outcome.fit_seconds:.1f} s, total {seconds:.1f} s)")
