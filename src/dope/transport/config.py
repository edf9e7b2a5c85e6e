"""The bus' settings: endpoints, flow control, CURVE and the run id.

Its own type, composed by :class:`dope.config.DopeConfig` (section ``[bus]``): this package
does not import the application-wide configuration. Unknown fields are an error.
"""

from __future__ import annotations

import msgspec


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """ZeroMQ endpoints (tcp://host:port or ipc://path) and flow-control settings.

    ``snapshot = ""`` serves no snapshots (no late-joiner catch-up); ``snapshot_bars``
    is how many recent bars per topic a publisher keeps for late joiners; a HWM
    of 0 means unbounded; ``linger_ms`` is how long closing waits for queued messages.

    CURVE (``docs/bus.md``, Security): ``curve_server_secret`` (this process' publishers'
    ``.key_secret`` file) with ``curve_authorized_dir`` (folder of the clients' ``.key`` files);
    ``curve_server_public`` (the publishers' ``.key`` file) with ``curve_client_secret`` (this
    process' subscribers' ``.key_secret`` file). ``allow_plaintext_remote`` lets a publisher bind
    beyond loopback without CURVE (with a warning); otherwise that is refused.

    ``run_id`` names the run (``dope up`` sets a fresh one in ``<run dir>/config.json``): publishers
    put it in every frame header, subscribers drop and count messages of another run. ``""``: no
    run (publishers send ``""``, subscribers accept every run).
    """

    publish: str = "tcp://127.0.0.1:5555"
    snapshot: str = "tcp://127.0.0.1:5556"
    send_hwm: int = 100_000
    receive_hwm: int = 100_000
    heartbeat_ms: int = 1_000
    snapshot_bars: int = 360
    linger_ms: int = 1_000
    curve_server_secret: str = ""
    curve_authorized_dir: str = ""
    curve_server_public: str = ""
    curve_client_secret: str = ""
    allow_plaintext_remote: bool = False
    run_id: str = ""

    def __post_init__(self) -> None:
        for first, second in (("curve_server_secret", "curve_authorized_dir"),
                              ("curve_server_public", "curve_client_secret")):
            if bool(getattr(self, first)) != bool(getattr(self, second)):
                raise ValueError(f"bus.{first} and bus.{second} go together: set both or neither")
        for name in ("publish", "snapshot"):
            endpoint = getattr(self, name)
            if (endpoint or name == "publish") and not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"bus.{name} must be a tcp://, ipc:// or inproc:// endpoint, got {endpoint!r}")
        for name in ("send_hwm", "receive_hwm", "snapshot_bars", "linger_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"bus.{name} must be >= 0, got {getattr(self, name)}")
        if self.heartbeat_ms <= 0:
            raise ValueError(f"bus.heartbeat_ms must be > 0, got {self.heartbeat_ms}")
