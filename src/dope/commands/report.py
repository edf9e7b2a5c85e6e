"""``dope report RESULTS``: the self-contained HTML report of a ``dope optimize --out RESULTS`` folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope report``."""
    parser.add_argument("results", metavar="RESULTS", help="folder written by `dope optimize --out`")
    parser.add_argument("--output", "-o", default="report.html", help="HTML file to write (default report.html)")


def run(args: argparse.Namespace) -> int:
    """Read the results and write the report."""
    from dope.research import report

    print(f"wrote {report(Path(args.results), Path(args.output))}")
    return 0
