"""``dope lineage --symbol S --time T [--json]``: one live decision, reconstructed from what was stored.

The bar, the feature vector the models received, every model's score, role and latency, the chosen
prediction and why, the trader's decision and fill, the chosen model's registry metadata, and whether
the features, the scores and the decision come out the same when computed again
(:mod:`dope.loop.lineage`). Exits 2 naming what is missing when nothing is stored for that bar.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from dope.config import DopeConfig
    from dope.loop.lineage import Sources

LINEAGE_KEYS = ("data_start_ms", "data_end_ms", "rows", "data_hash", "parent_id", "code_version")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    parser.add_argument("--time", required=True,
                        help="the bar: its open time in epoch ms, or an ISO time inside it (UTC unless it says)")
    parser.add_argument("--config", help="TOML configuration file (store, registry, trader, bar interval)")
    parser.add_argument("--store", help="store folder (default: [store] path)")
    parser.add_argument("--registry", help="registry folder (default: [registry] path)")
    parser.add_argument("--json", action="store_true", help="one JSON object (bar, features, scores, chosen, "
                                                             "decision, fill, model, reproduced)")


def run(args: argparse.Namespace) -> int:
    from dope.config import load_config
    from dope.loop.lineage import lineage
    from dope.timeparse import parse_time

    sources = sources_of(load_config(args.config), store=args.store, registry=args.registry)
    found = lineage(sources, args.symbol, parse_time(args.time))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(found), indent=2).decode())
    else:
        print(format_lineage(found))
    return 0


def sources_of(config: DopeConfig, store: str | None = None, registry: str | None = None) -> Sources:
    """Where ``config`` keeps the pieces of a decision, and what its services ran with (``store``/``registry``
    override its paths)."""
    from pathlib import Path

    from dope.loop.lineage import Sources
    from dope.services.featurizer import feature_set_of_config
    from dope.services.trader import journal_path
    from dope.trading.strategy import ThresholdStrategy

    return Sources(Path(store or config.store.path), Path(registry or config.registry.path),
                   journal_path(config.trader, config.trader.service_name), config.bars.interval_ms,
                   feature_set_of_config(config), ThresholdStrategy.of(config.trader.thresholds()))


def format_lineage(found: dict[str, Any]) -> str:
    """The lineage as a few readable sections."""
    bar, chosen, rep = found["bar"], found["chosen"], found["reproduced"]
    lines = [f"{found['symbol']} bar {found['time']} (open time {found['open_time']})",
             f"  bar       open {bar['open']} high {bar['high']} low {bar['low']} close {bar['close']} "
             f"volume {bar['volume']} trades {bar['count']}{' (empty)' if bar['empty'] else ''}",
             f"  features  {found['features']['feature_set']} v{found['features']['feature_version']}: "
             f"{len(found['features']['values'])} values (reproduced: {rep['features']}, "
             f"max |diff| {rep['features_max_abs_diff']})",
             "  scores"]
    for row in found["scores"]:
        score = (f"{row['prediction']:.6g} in {row['latency_us']} us" if row.get("archived") and not row["abstained"]
                 else f"abstained ({row['abstained']})" if row.get("archived") else "no score archived")
        again = f" reproduced: {row['reproduced']}" if row.get("archived") else ""
        lines.append(f"    {row['model_id']:40} {row['role'] or '-':10} {row['status']:14} {score}{again}")
    lines.append(f"  chosen    {chosen['model_id'] or '-'} ({chosen['chosen_by']}): {chosen['prediction']} - "
                 f"{chosen['why']}")
    lines += _decision_lines(found)
    lines.append("  model     " + _model_summary(found["model"]))
    lines.append(f"  reproduced: features {rep['features']}, scores {rep['scores']}, decision {rep['decision']}")
    return "\n".join(lines)


def _model_summary(model: dict[str, Any] | None) -> str:
    """Who the model is and what it was trained on: its id, kind, role, ``data`` and ``lineage`` entries, and
    the lineage fields wherever ``metadata.json`` holds them (``--json`` shows the whole metadata)."""
    if model is None:
        return "-"
    flat = {**model, **(model.get("data") or {}), **(model.get("lineage") or {})}
    keys = ("model_id", "kind", "role", "symbol", "train_start", "train_end", *LINEAGE_KEYS, "artifact_sha256")
    return ", ".join(f"{key} {flat[key]}" for key in keys if flat.get(key) not in (None, ""))


def _decision_lines(found: dict[str, Any]) -> list[str]:
    decision = found["decision"]
    if decision is None:
        return ["  decision  - (none archived)"]
    rule = decision["rule"]
    lines = [f"  decision  {decision['action']} -> position {decision['target_position']} ({decision['reason']}); "
             f"the rule from position {rule['position_before']}: {rule['action']} -> {rule['target_position']}"]
    for fill in found["fill"] or []:
        lines.append(f"  fill      {fill['client_order_id']} {fill['side']} {fill['qty']:.8g} @ {fill['price']:.8g} "
                     f"fee {fill['fee']:.6g}{' (journaled)' if fill['journaled'] else ''}")
    return lines
