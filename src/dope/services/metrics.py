"""Service health in Prometheus' text exposition format, served over HTTP on 127.0.0.1.

The supervisor hands :class:`MetricsServer` a function returning the current
:class:`ServiceMetrics` of every service; ``GET /metrics`` renders them::

    # HELP dope_service_up 1 when the service's process runs and its last heartbeat is recent.
    # TYPE dope_service_up gauge
    dope_service_up{service="featurizer"} 1
    ...
    dope_service_counter_total{service="featurizer",counter="features"} 1234

>>> text = render_metrics([ServiceMetrics("featurizer", True, 0.2, 0, 5.0, {"features": 3})])
>>> 'dope_service_counter_total{service="featurizer",counter="features"} 3' in text
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_GAUGES: Final = (
    ("dope_service_up", "1 when the service's process runs and its last heartbeat is recent.", "up"),
    ("dope_service_heartbeat_age_seconds", "Seconds since the service's last heartbeat (NaN: none yet).",
     "heartbeat_age_s"),
    ("dope_service_lag_seconds", "Event time behind the newest event time seen in the pipeline.", "lag_s"),
    ("dope_service_throughput_per_second", "Messages handled per second over the last heartbeats.",
     "throughput"),
)


@dataclass(frozen=True)
class ServiceMetrics:
    """What is exported of one service."""

    service: str
    up: bool
    heartbeat_age_s: float
    restarts: int
    throughput: float
    counters: dict[str, int] = field(default_factory=dict)
    lag_s: float = 0.0


def _escape(value: str) -> str:
    """A label value escaped as the exposition format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _family(name: str, help_text: str, kind: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]
    return lines


def render_metrics(services: Sequence[ServiceMetrics]) -> str:
    """Every service's gauges, restarts and heartbeat counters as Prometheus text (ends with a newline)."""
    lines: list[str] = []
    for name, help_text, attr in _GAUGES:
        lines += _family(name, help_text, "gauge",
                         ((f'service="{_escape(s.service)}"', float(getattr(s, attr))) for s in services))
    lines += _family("dope_service_restarts_total", "Times the supervisor restarted the service.", "counter",
                     ((f'service="{_escape(s.service)}"', s.restarts) for s in services))
    lines += _family("dope_service_counter_total", "The service's own heartbeat counters.", "counter",
                     ((f'service="{_escape(s.service)}",counter="{_escape(key)}"', value)
                      for s in services for key, value in sorted(s.counters.items())))
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``host:port`` (port 0 = any free one) in a daemon thread."""

    def __init__(self, provider: Callable[[], Sequence[ServiceMetrics]], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        handler = _handler(provider)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``host:port`` actually bound."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> ``(host, port)``; a ``ValueError`` names a malformed address."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"metrics address must be host:port, got {text!r}")
    return host, int(port)


def _handler(provider: Callable[[], Sequence[ServiceMetrics]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            body = render_metrics(provider()).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (quiet)
            return

    return Handler
