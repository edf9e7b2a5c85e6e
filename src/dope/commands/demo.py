"""``dope demo``: DOPE's main job on the embedded default, with no network and no account.

It is ``dope up`` with the configuration bundled in ``dope/data/demo.toml``: the
synthetic market at 50x real time, default models trained first if the registry
is empty, the whole live pipeline (collector, featurizer, model services,
rendezvous, decoy, paper trader, the DataOps loop's trainer) and the dashboard on http://127.0.0.1:5006/.
Everything it writes goes under ``var/demo``. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
from importlib.resources import as_file, files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dope.commands.up import add_arguments as up_arguments

    up_arguments(parser)
    parser.set_defaults(run_dir="var/demo/run")


def run(args: argparse.Namespace) -> int:
    from dope.commands.up import run as up

    if args.config is not None:
        return up(args)
    with as_file(files("dope.data") / "demo.toml") as demo_config:
        args.config = str(demo_config)
        return up(args)
