"""``dope models scorecards [MODEL_ID] [--symbol S] [--json]``: the rendezvous' live scorecards as a table.

Reads the scorecard files the rendezvous saves (``<store>/scorecards/*.json``, written every
``rendezvous.persist_every`` rounds and on stop), so it works whether or not the pipeline runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import msgspec

from dope.errors import UserError
from dope.messages import Scorecard
from dope.rendezvous.scorecard import ScorecardBook

COLUMNS = (("model_id", 36, "s"), ("symbol", 9, "s"), ("role", 10, "s"), ("rounds", 7, "d"),
           ("misses", 6, "d"), ("late", 5, "d"), ("rejected", 8, "d"), ("chosen", 7, "d"),
           ("latency_p50_us", 8, ".0f"), ("latency_p99_us", 8, ".0f"), ("realised", 8, "d"), ("rmse", 10, ".3e"),
           ("hit_rate", 8, ".3f"), ("ic", 7, ".3f"), ("pnl", 9, ".4f"), ("divergence", 10, ".3e"))
HEADERS = {"latency_p50_us": "p50 us", "latency_p99_us": "p99 us", "divergence": "diverg."}


def load_scorecards(folder: Path) -> list[Scorecard]:
    """Every card saved under ``folder`` (one file per rendezvous), as ``Scorecard`` messages
    labelled with the roles in force when they were saved."""
    cards: list[Scorecard] = []
    for path in sorted(folder.glob("*.json")):
        book = ScorecardBook()
        try:
            book.load(path)
        except OSError as exc:
            raise UserError(f"cannot read scorecards {path}: {exc}") from None
        cards.extend(book.snapshots(book.saved_roles, 0))
    return cards


def select(cards: Sequence[Scorecard], model_id: str | None, symbol: str | None) -> list[Scorecard]:
    """The cards of ``model_id`` / ``symbol`` (None: all)."""
    return [c for c in cards if model_id in (None, c.model_id) and symbol in (None, c.symbol)]


def format_table(cards: Sequence[Scorecard]) -> str:
    """A fixed-width table, one row per (model, symbol); ``-`` where a statistic is undefined."""
    header = " ".join(f"{HEADERS.get(name, name):>{w}}" if kind != "s" else f"{name:{w}}"
                      for name, w, kind in COLUMNS)
    return "\n".join([header, *(_row(card) for card in cards)])


def _row(card: Scorecard) -> str:
    cells = []
    for name, width, kind in COLUMNS:
        value = getattr(card, name)
        if kind == "s":
            cells.append(f"{(value or '-')[:width]:{width}}")
        else:
            cells.append(f"{'-' if value is None else format(value, kind):>{width}}")
    return " ".join(cells)


def show(args: argparse.Namespace) -> int:
    """``dope models scorecards``: print the saved scorecards (table or ``--json``)."""
    from dope.config import load_config

    config = load_config(args.config)
    folder = Path(getattr(args, "store", None) or config.store.path) / "scorecards"
    cards = select(load_scorecards(folder), args.model_id, args.symbol)
    if args.json:
        print(json.dumps(msgspec.to_builtins(cards), indent=2))
    elif not cards:
        print(f"no scorecards in {folder} (the rendezvous writes them while it runs)")
    else:
        print(format_table(cards))
    return 0

