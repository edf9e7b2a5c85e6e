"""``dope predict MODEL_ID``: a registered model's out-of-sample forecasts for a symbol and range, to Parquet.

    dope predict lightgbm-20260101T0000-ab12cd --symbol BTCUSDT --start 2024-02-01 --out preds.parquet

Columns: ``open_time``, ``close_time``, ``prediction``, ``model_id``, ``trained_until_ms`` (the end,
exclusive, of the model's training data). Bars opening before ``trained_until_ms`` are in sample for
*every* symbol (the model has seen that period) and are left out unless ``--allow-in-sample``; it is
an error when no bar is left. ``dope backtest`` and ``dope optimize`` refuse such rows in turn.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from dope.commands.options import open_store, time_option

if TYPE_CHECKING:
    from dope.models.registry import Registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope predict``."""
    parser.add_argument("model_id", metavar="MODEL_ID", help="a registered model (see `dope models list`)")
    parser.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    parser.add_argument("--start", help="first bar (open time), ISO 8601 UTC or epoch ms")
    parser.add_argument("--end", help="end (exclusive), ISO 8601 UTC or epoch ms")
    parser.add_argument("--out", required=True, help="Parquet file to write")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--registry", help="registry folder (default: [registry] path)")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--allow-in-sample", action="store_true",
                        help="keep bars opening before the end of the model's training data (in sample)")


def run(args: argparse.Namespace) -> int:
    """Load, verify, forecast, write."""
    from dope.training.threads import limit_threads

    limit_threads()
    from dope.training.pipeline import predict

    store, _ = open_store(args, interval=False)
    result = predict(store, open_registry(args), args.model_id, args.symbol, time_option(args.start),
                     time_option(args.end), allow_in_sample=args.allow_in_sample)
    for note in result.notes:
        print(f"dope predict: note: {note}", file=sys.stderr)
    result.frame.to_parquet(args.out, index=False)
    kind = "" if args.allow_in_sample else "out-of-sample "
    print(f"wrote {len(result.frame)} {kind}predictions to {args.out}")
    return 0


def open_registry(args: argparse.Namespace) -> Registry:
    """The registry named by ``--registry`` (else the config's)."""
    from dope.config import load_config
    from dope.models.registry import Registry

    return Registry(args.registry or load_config(args.config).registry.path)
