"""The ``dope`` command. Imports are lazy: ``dope --help`` must answer at once."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

# command name -> (module, function, one-line help). Each module exposes
# ``add_arguments(parser)`` and the named function taking the parsed namespace.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dope.commands.demo", "DOPE's main job on the embedded default: dope up on the synthetic market, no network"),
    "collect": ("dope.commands.collect", "Run the collector: trades from a source -> bars -> bus + store"),
    "ingest": ("dope.commands.ingest", "Import Binance public data files (trades, aggTrades, klines) into the store"),
    "bars": ("dope.commands.bars", "Query or export stored bars (any multiple of the stored interval)"),
    "synth": ("dope.commands.synth", "Generate synthetic bars (a year of 10 s bars in seconds) into the store"),
    "backtest": ("dope.commands.backtest", "Backtest thresholds on a predictions file against stored bars"),
    "dashboard": ("dope.commands.dashboard", "Serve the live dashboard (Bokeh) on 127.0.0.1"),
    "up": ("dope.commands.up", "Run the whole live pipeline, every service its own process (supervisor)"),
    "status": ("dope.commands.status", "Health, lag and throughput of each service of a running `dope up`"),
    "config": ("dope.commands.config", "Print the effective configuration (file + environment), validated"),
    "train": ("dope.commands.train", "Walk-forward evaluate a model on stored bars, fit it and register it"),
    "predict": ("dope.commands.predict", "Write a registered model's out-of-sample predictions to Parquet"),
    "models": ("dope.commands.models", "List, show, promote or retire registered models"),
    "evaluate": ("dope.commands.evaluate", "Walk-forward evaluation on the real 15m klines -> docs/evaluation.md"),
    "optimize": ("dope.commands.optimize", "Grid/Optuna threshold search, walk-forward optimization, DSR and PBO"),
    "report": ("dope.commands.report", "Self-contained HTML report of a `dope optimize --out` folder"),
    "study": ("dope.commands.study", "Walk-forward threshold study on the real 15m klines -> docs/study/"),
    "lineage": ("dope.commands.lineage", "One live decision reconstructed from the store, the archive, the journal "
                                         "and the registry, and reproduced"),
    "trader": ("dope.commands.trader", "A trader's state from its journal; reset its kill switch; compact its journal"),
    "keys": ("dope.commands.keys", "Generate CURVE key pairs for a bus across machines (encryption + auth)"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, reading any word that starts with ``-`` and a digit as a value, not an option.

    argparse takes only plain negative numbers (``-0.5``) for values; ``--lowers -0.002:0:5``,
    ``--lowers -0.002,-0.001`` and ``--lower -1e-4`` were refused as unknown options. No DOPE
    option starts with a digit, so such a word is always a value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per command (arguments loaded on use)."""
    parser = ArgumentParser(prog="dope", description="DOPE - DataOps Prediction Engine")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, Callable[[argparse.Namespace], int]]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"dope {name}", description=help_text)
    module.add_arguments(parser)
    return parser, module.run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dope`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in COMMANDS:
        parsed = build_parser().parse_args(args)
        if parsed.version:
            from dope import __version__

            print(__version__)
            return 0
        build_parser().print_help()
        return 0 if not args or args[0] in {"-h", "--help"} else 2
    parser, run = _command_parser(args[0])
    namespace = parser.parse_args(args[1:])
    return _run_reporting_errors(run, namespace)


def _run_reporting_errors(run: Callable[[argparse.Namespace], int], namespace: argparse.Namespace) -> int:
    from dope.compile_notice import install
    from dope.errors import UserError

    install()  # a line on stderr if numba compiles for long (the first run after an install)
    try:
        return run(namespace)
    except UserError as exc:
        print(f"dope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
