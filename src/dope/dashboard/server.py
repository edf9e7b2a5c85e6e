"""Serve the dashboard with Bokeh's server, bound to 127.0.0.1 by default, websocket origin restricted."""

from __future__ import annotations

import logging
import socket
from typing import Any

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.server.server import Server

from dope.config import DopeConfig
from dope.dashboard.app import Session, Thresholds
from dope.dashboard.state import DashboardState

log = logging.getLogger("dope.dashboard")


def free_port(address: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for ``port = 0``)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def make_server(state: DashboardState, config: DopeConfig) -> tuple[Server, str]:
    """A Bokeh server for ``state``, and the URL it serves the dashboard at (not started yet)."""
    dash = config.dashboard
    port = dash.port or free_port(dash.address)
    thresholds = Thresholds(config.trader.upper, config.trader.lower)

    def session(doc: Document) -> None:
        Session(doc, state, thresholds, dash.rollover)

    origins = [f"{dash.address}:{port}", f"localhost:{port}", *dash.allow_origins]
    server: Any = Server({"/": Application(FunctionHandler(session))}, address=dash.address, port=port,
                         allow_websocket_origin=origins, num_procs=1)
    return server, f"http://{dash.address}:{port}/"
