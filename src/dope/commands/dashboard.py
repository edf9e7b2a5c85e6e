"""``dope dashboard``: the live dashboard on its own (``dope up`` starts it with the rest)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dope.config import load_config, with_overrides
from dope.logs import setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--port", type=int, help="HTTP port (0 = any free port; default: [dashboard] port)")
    parser.add_argument("--address", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--endpoint", action="append", default=None,
                        help="bus endpoint to listen to (repeatable; default: every service's from the config)")


def run(args: argparse.Namespace) -> int:
    from dope.dashboard.feed import BusFeed, load_history, service_endpoints
    from dope.dashboard.server import make_server
    from dope.dashboard.state import DashboardState
    from dope.transport import client_curve

    overrides: dict[str, Any] = {"dashboard": {}}
    if args.port is not None:
        overrides["dashboard"]["port"] = args.port
    if args.address is not None:
        overrides["dashboard"]["address"] = args.address
    config = with_overrides(load_config(args.config), overrides)
    setup_logging(config.log_level)
    state = DashboardState(config.dashboard.rollover)
    history = load_history(state, config)
    feed = BusFeed(state, args.endpoint or service_endpoints(config), curve=client_curve(config.bus)).start()
    server, url = make_server(state, config)
    server.start()
    print(f"DOPE dashboard at {url} ({history} bars of history)", flush=True)
    print(f"DOPE dashboard at {url}", file=sys.stderr, flush=True)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
    return 0
