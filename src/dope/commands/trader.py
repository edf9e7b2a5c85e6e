"""``dope trader``: what a trader's journal says, a manual kill-switch reset, journal compaction.

    dope trader state [--config dope.toml] [--name trader] [--json]
    dope trader reset-kill-switch [--config dope.toml] [--name trader]
    dope trader compact [--config dope.toml] [--name trader]

The trader is found by its state folder (``[trader] state_dir``) and service name
(``--name``, default ``[trader] service_name``). ``state`` only reads the journal, so it is
safe beside a running trader; ``reset-kill-switch`` leaves the flag file the trader watches
(a running trader resets within a second, a stopped one when it starts); ``compact``
refuses while the trader runs (the trader also compacts its journal when it starts).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dope.errors import UserError

if TYPE_CHECKING:
    from dope.config import TraderConfig
    from dope.trading.journal import SymbolHistory

ACTIONS = ("state", "reset-kill-switch", "compact")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope trader``."""
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--name", help="the trader service's name (default: [trader] service_name)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (state)")


def run(args: argparse.Namespace) -> int:
    """Dispatch the action."""
    from dope.config import load_config

    config = load_config(args.config).trader
    name = args.name or config.service_name
    if args.action == "state":
        return _state(config, name, as_json=args.json)
    if args.action == "reset-kill-switch":
        return _reset(config, name)
    return _compact(config, name)


def symbol_state(symbol: str, history: SymbolHistory, initial_cash: float) -> dict[str, Any]:
    """One symbol's state as the journal tells it: position, cash, equity at the last close, kill switch."""
    from dope.trading.live import restored_portfolio

    portfolio = restored_portfolio(initial_cash, history)
    step = history.last_step
    killed = step is not None and step.risk.killed and history.resets == 0
    return {"symbol": symbol, "last_bar_open_time": step.open_time if step is not None else None,
            "position": portfolio.qty, "cash": portfolio.cash,
            "equity": portfolio.equity(step.close) if step is not None else portfolio.cash,
            "round_trips": len(portfolio.trades), "fees_paid": portfolio.fees_paid,
            "kill_switch": killed, "kill_reason": step.risk.reason if killed and step is not None else "",
            "pending_order": step is not None and step.pending is not None,
            "open_exchange_orders": sorted(history.open_intents), "partial_orders": history.partial_orders}


def _state(config: TraderConfig, name: str, *, as_json: bool) -> int:
    from dope.services.trader import journal_path
    from dope.trading.journal import fold, read_journal

    path = journal_path(config, name)
    if not path.exists():
        raise UserError(f"no journal {path}: has a trader named {name!r} run with state_dir {config.state_dir}?")
    records = read_journal(path, repair=False)
    states = [symbol_state(s, h, config.initial_cash) for s, h in sorted(fold(records).items())]
    if as_json:
        print(json.dumps({"journal": str(path), "records": len(records), "symbols": states}, indent=2))
        return 0
    print(f"{path}: {len(records)} records")
    print(f"{'symbol':12} {'last bar':>14} {'position':>14} {'equity':>14} {'trips':>6} {'kill switch':12}")
    for st in states:
        kill = f"ON ({st['kill_reason']})" if st["kill_switch"] else "off"
        print(f"{st['symbol']:12} {st['last_bar_open_time'] or '-':>14} {st['position']:>14.8g} "
              f"{st['equity']:>14.2f} {st['round_trips']:>6} {kill}")
    for st in states:
        for cid, unfilled in sorted(st["partial_orders"].items()):
            print(f"{st['symbol']}: order {cid} executed partly; {unfilled} was not executed")
    return 0


def _reset(config: TraderConfig, name: str) -> int:
    from dope.services.trader import reset_flag_path

    flag = reset_flag_path(config, name)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    print(f"left {flag}: trader {name!r} resets its kill switch within a second if it runs, else when it starts")
    return 0


def _compact(config: TraderConfig, name: str) -> int:
    from dope.services.trader import journal_path, trader_lock
    from dope.trading.journal import compact_journal

    path = journal_path(config, name)
    with trader_lock(config, name):
        before, after = compact_journal(path)
    print(f"{path}: {before} records -> {after}")
    return 0
