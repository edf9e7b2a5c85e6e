"""``dope evaluate``: the walk-forward table of every model on the real 15-minute klines -> docs/evaluation.md.

    dope evaluate                                   # 9 symbols, 2025, all models (about 10 minutes, 2 cores)
    dope evaluate --symbols BTCUSDT ETHUSDT --models ridge lightgbm --out /tmp/eval.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dope.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope evaluate``."""
    parser.add_argument("--data", default="../shared/data/binance/klines/15m",
                        help="folder of the 15m klines files (default ../shared/data/binance/klines/15m)")
    parser.add_argument("--out", default="docs/evaluation.md", help="markdown file to write")
    parser.add_argument("--symbols", nargs="*", help="symbols (default: the 9 in the data set)")
    parser.add_argument("--models", nargs="*", help="model kinds (default: momentum ridge random_forest "
                                                    "lightgbm lstm; zero is always the baseline)")
    parser.add_argument("--folds", type=int, default=4, help="walk-forward folds (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: min(2, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate every model on every symbol and write the document."""
    from dope.training.threads import limit_threads

    limit_threads(args.threads)
    from dope.training.evaluation import MODELS, SYMBOLS, EvaluationSettings, evaluate_symbol, render

    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"klines folder not found: {data} (expected ../shared/data/binance/klines/15m)")
    unknown = sorted(set(args.models or ()) - set(MODELS))
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    models = {k: MODELS[k] for k in (args.models or MODELS)}
    settings = EvaluationSettings(data=data, symbols=tuple(args.symbols or SYMBOLS), models=models,
                                  folds=args.folds)
    began = time.perf_counter()
    results = []
    for symbol in settings.symbols:
        results.append(evaluate_symbol(settings, symbol, progress=not args.no_progress))
        print(f"{symbol}: {results[-1].rows} rows, {time.perf_counter() - began:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(results, settings, time.perf_counter() - began), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
