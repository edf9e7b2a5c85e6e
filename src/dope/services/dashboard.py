"""The dashboard as a DOPE service: the Bokeh server, its bus feed, and heartbeats like any other service.

    python -m dope.services.dashboard --config dope.toml [--name dashboard] [--port 5006]

``dope up`` starts it this way; ``dope dashboard`` runs the same thing on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from dope.config import DopeConfig, with_overrides
from dope.dashboard.feed import BusFeed, load_history, service_endpoints
from dope.dashboard.server import make_server
from dope.dashboard.state import DashboardState
from dope.errors import UserError
from dope.services.base import endpoint_of, service_main, service_publisher
from dope.transport import Publisher, client_curve

log = logging.getLogger("dope.dashboard")


class DashboardService:
    """Serves the dashboard until stopped; heartbeats say how many sessions and messages it has."""

    def __init__(self, name: str, config: DopeConfig, endpoints: Sequence[str], publisher: Publisher) -> None:
        self.name, self.config, self.publisher = name, config, publisher
        self.state = DashboardState(config.dashboard.rollover)
        self.history = load_history(self.state, config)
        self.feed = BusFeed(self.state, endpoints, curve=client_curve(config.bus), run_id=config.bus.run_id)
        self.server: Any = None
        self.url = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Start the feed and the server on this event loop; heartbeat until ``stop``."""
        self.feed.start()
        try:
            self.server, self.url = make_server(self.state, self.config)
        except OSError as exc:
            dash = self.config.dashboard
            raise UserError(f"the dashboard cannot listen on {dash.address}:{dash.port} ({exc.strerror}); "
                            f"set [dashboard] port (or DOPE_DASHBOARD__PORT, 0 = any free port)") from None
        self.server.start()
        print(f"DOPE dashboard at {self.url} ({self.history} bars of history)", flush=True)
        log.info("dashboard at %s", self.url)
        while not stop.is_set():
            self.publisher.heartbeat(self.counters())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.bus.heartbeat_ms / 1000)

    def counters(self) -> dict[str, int]:
        sessions = len(self.server.get_sessions()) if self.server is not None else 0
        return {"sessions": sessions, "messages": self.state.version, "ignored": self.state.ignored,
                **self.state.bus_counters}

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.feed.stop()
        self.publisher.close()


def build(config: DopeConfig, **overrides: Any) -> DashboardService:
    """The dashboard of ``config``; overrides: ``name``, ``port``, ``address``, ``endpoints``."""
    name = overrides.get("name") or "dashboard"
    changes = {k: overrides[k] for k in ("port", "address") if overrides.get(k) is not None}
    if changes:
        config = with_overrides(config, {"dashboard": changes})
    endpoints = overrides.get("endpoints") or service_endpoints(config)
    publisher = service_publisher(config, name, endpoint_of(config, "dashboard"))
    return DashboardService(name, config, endpoints, publisher)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="HTTP port (0 = any free port; default: [dashboard] port)")
    parser.add_argument("--address", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--endpoint", dest="endpoints", action="append",
                        help="bus endpoint to listen to (repeatable; default: every service's from the config)")


def main(argv: list[str] | None = None) -> int:
    return service_main(build, argv, prog="dope.services.dashboard", add_arguments=add_arguments,
                        default_name="dashboard")


if __name__ == "__main__":
    raise SystemExit(main())
