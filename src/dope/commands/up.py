"""``dope up``: the whole live pipeline, every service its own process, from one configuration.

    dope up                                   # embedded default: bundled real trades, models trained if needed
    dope up --synthetic --speed 10            # the synthetic market at 10x real time
    dope up --replay trades.csv --speed 0     # replay files as fast as possible
    dope up --binance                         # the live exchange (network needed)
    dope up --config dope.toml --no-dashboard --run-dir var/run

See ``docs/services.md``. ``dope status`` reads ``<run dir>/status.json``. Every run gets an id
(``bus.run_id`` in ``<run dir>/config.json``) and, unless the configuration names them, its
endpoints are ``ipc://`` sockets under ``<run dir>/bus``: two runs on one machine (each with its
own ``--run-dir``) never hear each other; a second run in the same directory is refused.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from dope.config import DopeConfig, load_config, with_overrides

log = logging.getLogger("dope.up")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope up``."""
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--replay", nargs="*", metavar="FILE", help="replay trade files (none: the bundled trades)")
    source.add_argument("--synthetic", action="store_true", help="the seeded synthetic market")
    source.add_argument("--binance", action="store_true", help="the live Binance feed (network)")
    parser.add_argument("--speed", type=float, help="replay/synthetic speed: 0 = as fast as possible, 1 = real time")
    parser.add_argument("--duration", help="synthetic market duration, e.g. 1h")
    parser.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="symbols to trade")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument("--no-bootstrap", action="store_true", help="do not train default models into an empty registry")
    parser.add_argument("--run-dir", default="var/run", help="config, status and logs of this run (default var/run)")
    parser.add_argument("--metrics", help="Prometheus endpoint host:port ('' = none)")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop everything once a finite source (replay, synthetic) is fully processed")


def config_from_args(args: argparse.Namespace) -> DopeConfig:
    """The configuration file (or defaults) with the command-line options on top."""
    overrides: dict[str, Any] = {}

    def put(section: str, name: str, value: Any) -> None:
        if value is not None:
            overrides.setdefault(section, {})[name] = value

    if args.replay is not None:
        put("collector", "source", "replay")
        put("replay", "files", args.replay or None)
    put("collector", "source", "synthetic" if args.synthetic else "binance" if args.binance else None)
    put("replay", "speed", args.speed)
    put("synthetic", "speed", args.speed)
    put("synthetic", "duration", args.duration)
    put("collector", "symbols", args.symbols)
    put("supervisor", "metrics", args.metrics)
    config = with_overrides(load_config(args.config), overrides)
    if args.no_dashboard:
        services = [s for s in config.supervisor.services if s != "dashboard"]
        config = with_overrides(config, {"supervisor": {"services": services}})
    return config


class StopFlag:
    """Set by a signal handler. A plain attribute, no lock: a ``threading.Event`` set from a handler
    deadlocks when a second signal arrives while the first handler holds the Event's lock."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def run(args: argparse.Namespace) -> int:
    """Bootstrap models if needed, then supervise every service until Ctrl-C / SIGTERM."""
    from dope.logs import setup_logging
    from dope.models.registry import Registry
    from dope.services.supervisor import (
        Supervisor,
        bootstrap_registry,
        default_deployments,
        lock_run_dir,
        place_endpoints,
    )

    config = config_from_args(args)
    setup_logging(config.log_level)
    run_dir = Path(args.run_dir)
    lock = lock_run_dir(run_dir)
    if not args.no_bootstrap and not Registry(config.registry.path).list():
        print(f"dope up: the registry {config.registry.path} is empty: training default models "
              f"{', '.join(config.supervisor.bootstrap)} on synthetic bars first", file=sys.stderr)
        bootstrap_registry(config)
    config = place_endpoints(default_deployments(config, Registry(config.registry.path).roles()), run_dir)
    supervisor = Supervisor(config, run_dir, exit_when_done=args.exit_when_done)
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"dope up: run {config.bus.run_id}, {len(supervisor.processes)} services "
          f"({', '.join(p.spec.name for p in supervisor.processes)}); "
          f"status: dope status --run-dir {args.run_dir}; Ctrl-C stops", file=sys.stderr)
    try:
        return supervisor.run(stop)
    finally:
        lock.close()
