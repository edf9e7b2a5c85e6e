"""A tiny service for the supervisor tests (run as ``python -m tests.unit.test_supervisor_fake_service``).

``--behaviour``: ``ok`` heartbeats until stopped; ``stubborn`` ignores SIGTERM; ``bad-config`` exits 2;
``finish`` exits 0 after its first heartbeat.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from dope.config import DopeConfig
from dope.errors import UserError
from dope.services.base import Service, service_main, service_publisher


class Fake(Service):
    def __init__(self, *args: Any, behaviour: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.behaviour = behaviour

    async def setup(self) -> None:
        if self.behaviour == "bad-config":
            raise UserError("fake: bad configuration")
        if self.behaviour == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def on_idle(self) -> None:
        self.count("ticks")
        if self.behaviour == "finish" and self.counters["ticks"] > 5:
            sys.exit(0)


def build(config: DopeConfig, **options: Any) -> Fake:
    name = options["name"]
    return Fake(name, service_publisher(config, name, options["endpoint"]), heartbeat_ms=config.bus.heartbeat_ms,
                behaviour=options.get("behaviour", "ok"))


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--behaviour", default="ok")


if __name__ == "__main__":
    raise SystemExit(service_main(build, sys.argv[1:], prog="fake", add_arguments=_arguments))
