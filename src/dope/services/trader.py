"""The trader service: ``prediction.*`` (rendezvous) + ``bar.*`` (collector) -> ``decision.*``, ``fill.*``, ``equity.*``.

A thin loop around :class:`dope.trading.live.LiveTrader`-style per-symbol traders
(:class:`~dope.trading.live.SymbolTrader`), which drive the same trading core as the backtester.
The paper broker is the default; the Binance broker needs ``trader.broker = "binance"`` *and*
an explicit opt-in (``--live``, or ``trader.i_understand_real_orders = "yes"``, e.g. the env
``DOPE_TRADER__I_UNDERSTAND_REAL_ORDERS=yes``) and keys in ``BINANCE_API_KEY`` /
``BINANCE_API_SECRET``. State is journaled in ``<trader.state_dir>/<name>.journal`` (compacted
when the trader starts); creating the file ``<trader.state_dir>/<name>.reset-kill-switch``
(``dope trader reset-kill-switch``) resets the kill switch of every symbol. A trader holds
``<name>.lock`` while it runs, so a second one with the same name and state folder is refused.

    python -m dope.services.trader --config dope.toml [--live] [--no-catch-up]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp

from dope.bars import bars_from_frame
from dope.clock import Clock, LiveClock
from dope.config import ConfigError, DopeConfig, TraderConfig
from dope.fileio import try_lock
from dope.messages import AnyMessage, Bar, Prediction
from dope.services.base import Service, endpoint_of, service_main, service_publisher, service_subscriber
from dope.store import BarStore
from dope.trading.binance import (
    BinanceBroker,
    BinanceOrderClient,
    Credentials,
    IpBanned,
    OrderUnknown,
    check_signed_url,
    reconcile,
)
from dope.trading.journal import Journal, ResetRecord, SymbolHistory, compacted_records, fold, read_journal
from dope.trading.live import SymbolTrader
from dope.trading.orders import Execution
from dope.trading.portfolio import Portfolio
from dope.transport import Publisher, Subscriber

T = TypeVar("T")
CATCH_UP_TIMEOUT_MS = 2_000
ORDER_TIMEOUT_S = 120.0
WAIT_TICK_S = 0.25
RESET_CHECK_MS = 250


def journal_path(config: TraderConfig, name: str) -> Path:
    """Where the trader named ``name`` journals: ``<state_dir>/<name>.journal``."""
    return Path(config.state_dir) / f"{name}.journal"


def reset_flag_path(config: TraderConfig, name: str) -> Path:
    """The file whose creation resets the kill switch: ``<state_dir>/<name>.reset-kill-switch``."""
    return Path(config.state_dir) / f"{name}.reset-kill-switch"


def take_trader_lock(config: TraderConfig, name: str) -> IO[bytes]:
    """Lock ``<state_dir>/<name>.lock`` (held until the handle closes); ConfigError when a trader holds it."""
    path = Path(config.state_dir) / f"{name}.lock"
    try:
        return try_lock(path)
    except BlockingIOError:
        raise ConfigError(f"a trader named {name!r} is already running on {config.state_dir} "
                          f"(it holds {path}); stop it first, or give this one another name") from None


@contextmanager
def trader_lock(config: TraderConfig, name: str) -> Iterator[None]:
    """Hold the trader's lock for a ``with`` block (to work on its journal while it is not running)."""
    handle = take_trader_lock(config, name)
    try:
        yield
    finally:
        handle.close()


class LoopThread:
    """An asyncio loop in a daemon thread: the Binance client's HTTP runs there, the service waits for it."""

    def __init__(self) -> None:
        self.on_wait: Callable[[], None] | None = None
        """Called about every ``WAIT_TICK_S`` while :meth:`run` waits (the trader heartbeats from it)."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="binance-orders", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = ORDER_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result; past ``timeout_s`` it is cancelled, not left running."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return future.result(max(min(WAIT_TICK_S, deadline - time.monotonic()), 0))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    future.cancel()
                    raise
                if self.on_wait is not None:
                    self.on_wait()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class BinanceRuntime:
    """The Binance side of the trader: the signed client on its own loop thread, one broker per symbol."""

    def __init__(self, config: TraderConfig, rest_url: str, credentials: Credentials, *,
                 timeout_ms: int = 10_000, max_order_age_ms: int = 0) -> None:
        self.config = config
        self.max_order_age_ms = max_order_age_ms
        self.thread = LoopThread()
        self.session = self.thread.run(_new_session())
        self.client = BinanceOrderClient(self.session, rest_url, credentials, LiveClock(),
                                         recv_window_ms=config.recv_window_ms, timeout_ms=timeout_ms)

    def __repr__(self) -> str:
        return f"BinanceRuntime({self.client!r})"

    def start(self) -> None:
        """Measure the exchange clock's offset."""
        self.thread.run(self.client.sync_time())

    def broker(self, symbol: str, portfolio: Portfolio, journal: Journal, history: SymbolHistory | None
               ) -> BinanceBroker:
        """A broker for ``symbol`` with the exchange's filters and the journal's known orders."""
        filters = self.thread.run(self.client.exchange_filters(symbol))
        known = set(history.finished_orders) | set(history.open_intents) if history else set()
        return BinanceBroker(self.client, filters, portfolio, fee_rate=self.config.fee_rate,
                             fraction=self.config.fraction, journal=journal.append, known_orders=known,
                             max_order_age_ms=self.max_order_age_ms)

    def reconcile(self, broker: BinanceBroker, history: SymbolHistory | None) -> list[str]:
        return self.thread.run(reconcile(broker, history))

    def execute(self, broker: BinanceBroker, open_time: int, price: float, leg: str) -> tuple[Execution, ...]:
        return self.thread.run(broker.execute(open_time, price, leg))

    def close(self) -> None:
        self.thread.run(self.session.close())
        self.thread.close()


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


class TraderService(Service):
    """Trades every configured symbol from the bus; publishes decisions, fills and equity."""

    def __init__(self, name: str, publisher: Publisher, subscribers: Sequence[Subscriber], config: TraderConfig,
                 symbols: Sequence[str], *, clock: Clock | None = None, heartbeat_ms: int = 1_000,
                 binance: BinanceRuntime | None = None, catch_up: bool = True, store: BarStore | None = None) -> None:
        super().__init__(name, publisher, subscribers, heartbeat_ms=heartbeat_ms, clock=clock)
        self.config = config
        self.binance = binance
        self.store = store
        """Where bars missed live are read back from (see :meth:`_recover_missed`)."""
        self._last_wait_beat = 0.0
        self.catch_up = catch_up
        self.trade_counters: dict[str, int] = {}
        self.journal_file = journal_path(config, name)
        self._lock = take_trader_lock(config, name)
        try:
            histories = self._compacted_history()
        except BaseException:
            self._lock.close()
            raise
        self.journal = Journal(self.journal_file, fsync=config.journal_fsync)
        self.traders: dict[str, SymbolTrader] = {}
        if binance is not None:  # heartbeats while the reconciliation below, and later orders, wait on the exchange
            binance.thread.on_wait = self._beat_while_waiting
        self.traders = {s: self._symbol_trader(s, histories.get(s)) for s in symbols}
        self._next_reset_check = 0
        resumed = {s: t.last_open_time for s, t in self.traders.items() if t.last_open_time >= 0}
        if resumed:
            self.log.info("%s: resumed from %s at bars %s", name, self.journal_file, resumed)

    def _beat_while_waiting(self) -> None:
        """Heartbeats while an order call waits on the exchange (a 429 back-off, an unknown outcome's look-ups):
        a trader busy with the exchange is not a dead one."""
        now = time.monotonic()
        if now - self._last_wait_beat >= self.heartbeat_ms / 1000:
            self._last_wait_beat = now
            self.send_heartbeat()

    def _compacted_history(self) -> dict[str, SymbolHistory]:
        """Compact the journal (under the lock, before anything appends) and fold it."""
        before, kept = compacted_records(self.journal_file)
        if len(kept) < before:
            self.log.info("%s: journal compacted from %d to %d records", self.name, before, len(kept))
        return fold(kept)

    def _symbol_trader(self, symbol: str, history: SymbolHistory | None) -> SymbolTrader:
        rt = self.binance
        if rt is None:
            return SymbolTrader(symbol, self.config, history, journal=self.journal, counters=self.trade_counters)
        trader = SymbolTrader(symbol, self.config, history, journal=self.journal, execute=rt.execute,
                              counters=self.trade_counters,
                              make_broker=lambda pf: rt.broker(symbol, pf, self.journal, history))
        assert isinstance(trader.broker, BinanceBroker)
        try:
            problems = rt.reconcile(trader.broker, history)
        except (IpBanned, OrderUnknown) as exc:  # the exchange cannot tell now: no trading until a human looks
            problems = [f"not possible: {exc}"]
        for problem in problems:
            trader.kill(f"reconciliation: {problem}")
        return trader

    async def setup(self) -> None:
        """Catch up on the bars missed while down (no decisions on them: their predictions are gone)."""
        if not self.catch_up:
            return
        now = self.clock.now_ms()
        for msg in await self.fetch_snapshots(CATCH_UP_TIMEOUT_MS):
            if isinstance(msg, Bar) and msg.symbol in self.traders:
                self.count("catch_up_bars")
                self._on_bar(self.traders[msg.symbol], msg, now, wait=False)

    def handle(self, msg: AnyMessage) -> None:
        trader = self.traders.get(msg.symbol)
        if trader is None:
            if isinstance(msg, Bar | Prediction):
                self.count("ignored_symbols")
            return
        now = self.clock.now_ms()
        if isinstance(msg, Bar):
            self._on_bar(trader, msg, now)
        elif isinstance(msg, Prediction):
            self._on_prediction(trader, msg, now)

    def _on_bar(self, trader: SymbolTrader, bar: Bar, now: int, *, wait: bool = True) -> None:
        """Step ``bar`` after any bars missed before it (``wait=False``: caught up, no prediction to wait for)."""
        if not _valid_bar(bar):
            self.reject("bad_bar", f"bar {bar.open_time} has a price that is not a positive number", bar.symbol)
            return
        if 0 <= trader.newest_open_time < bar.open_time - bar.interval_ms:
            self._recover_missed(trader, bar, now, ask_peers=wait)  # caught up: the peers' snapshots are in hand
        self._publish_all(trader.on_bar(bar, now, wait=wait))

    def _recover_missed(self, trader: SymbolTrader, bar: Bar, now: int, *, ask_peers: bool = True) -> None:
        """Bars of ``bar``'s symbol that never reached this trader live (a publisher restarted before it heard
        them, a queue overflowed while an order call waited): read back from the store and the peers' snapshots
        and stepped in order before ``bar``, without waiting for their predictions (those are gone).
        ``ask_peers=False``: from the store only (a catch-up at start, whose snapshots are in hand)."""
        first, end = trader.newest_open_time + bar.interval_ms, bar.open_time
        missed = {b.open_time: b for b in self._stored_bars(bar.symbol, bar.interval_ms, first, end)}
        for sub in self.subscribers if ask_peers else ():
            for msg in sub.catch_up(CATCH_UP_TIMEOUT_MS):
                if isinstance(msg, Bar) and msg.symbol == bar.symbol and first <= msg.open_time < end:
                    missed[msg.open_time] = msg
        self.count("missed_bars", len(missed))
        self.log.warning("%s: %d bar(s) before %d never arrived; %d recovered from the store and snapshots",
                         bar.symbol, (end - first) // bar.interval_ms, end, len(missed))
        for open_time in sorted(missed):
            if _valid_bar(missed[open_time]):
                self._publish_all(trader.on_bar(missed[open_time], now, wait=False))

    def _stored_bars(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int) -> list[Bar]:
        if self.store is None:
            return []
        return bars_from_frame(self.store.read_bars(symbol, interval_ms, start_ms, end_ms), interval_ms, symbol)

    def _on_prediction(self, trader: SymbolTrader, pred: Prediction, now: int) -> None:
        if pred.prediction is not None and not math.isfinite(pred.prediction):
            self.reject("nan_prediction", f"prediction {pred.prediction} for bar {pred.open_time} (held)", pred.symbol)
            pred = Prediction(symbol=pred.symbol, event_time=pred.event_time, open_time=pred.open_time,
                              prediction=None, model_id=pred.model_id, chosen_by="invalid",
                              deadline_ms=pred.deadline_ms)
        self._publish_all(trader.on_prediction(pred, now))

    def on_idle(self) -> None:
        now = self.clock.now_ms()
        for trader in self.traders.values():
            self._publish_all(trader.poll(now))
        if now >= self._next_reset_check:
            self._next_reset_check = now + RESET_CHECK_MS
            self._check_reset(now)
            self.journal.sync_if_due()

    def _check_reset(self, now: int) -> None:
        flag = reset_flag_path(self.config, self.name)
        if not flag.exists():
            return
        for symbol, trader in self.traders.items():
            trader.risk.reset()
            self.journal.append(ResetRecord(symbol=symbol, time_ms=now))
        flag.unlink(missing_ok=True)
        self.count("kill_switch_resets")
        self.log.warning("%s: kill switch reset by hand (%s)", self.name, flag)

    def _publish_all(self, messages: list[AnyMessage]) -> None:
        for msg in messages:
            self.publish(msg)

    def extra_counters(self) -> Mapping[str, int]:
        kills = {f"kill_switch.{s}": int(t.risk.state.killed) for s, t in self.traders.items()}
        if self.binance is None:
            return {**self.trade_counters, **kills}
        client = self.binance.client
        ban_s = max(client.banned_until_ms - client.clock.now_ms(), 0) // 1000
        return {**self.trade_counters, **kills, **{f"binance.{k}": v for k, v in client.counters.items()},
                "alarm.ip_ban_s_left": ban_s}

    def finish(self) -> None:
        self.journal.close()
        self._lock.close()

    def close(self) -> None:
        super().close()
        self.finish()
        if self.binance is not None:
            self.binance.close()


def _valid_bar(bar: Bar) -> bool:
    return all(0 < x < math.inf for x in (bar.open, bar.close))


def refuse_during_ban(config: TraderConfig, name: str, now_ms: int | None = None) -> None:
    """IpBanned while the IP ban the trader's journal remembers lasts: a restart sends nothing before it ends
    (each request during a ban makes Binance ban longer)."""
    histories = fold(read_journal(journal_path(config, name), repair=False))
    until = max((h.last_step.risk.halted_until_ms for h in histories.values() if h.last_step is not None), default=0)
    now = LiveClock().now_ms() if now_ms is None else now_ms
    if until > now:
        raise IpBanned(f"trader {name!r}: Binance bans this IP for {(until - now) / 1000:.0f} s more (journaled); "
                       "not starting before the ban ends", until)


def max_order_age_ms(config: DopeConfig) -> int:
    """``trader.max_order_age_ms``, or half the bar interval when it is 0."""
    return config.trader.max_order_age_ms or config.bars.interval_ms // 2


def binance_runtime(config: DopeConfig, *, live: bool, environ: Mapping[str, str] | None = None) -> BinanceRuntime:
    """The Binance side, after checking the opt-in; ConfigError says what is missing."""
    tc = config.trader
    if not (live or tc.i_understand_real_orders == "yes"):
        raise ConfigError('trader.broker = "binance" sends real orders: run the trader with --live or set '
                          "DOPE_TRADER__I_UNDERSTAND_REAL_ORDERS=yes (trader.i_understand_real_orders)")
    credentials = Credentials.from_env(environ)
    url = tc.rest_url or config.binance.rest_url
    check_signed_url(url)
    runtime = BinanceRuntime(tc, url, credentials,
                             timeout_ms=config.binance.request_timeout_ms, max_order_age_ms=max_order_age_ms(config))
    runtime.start()
    return runtime


def build(config: DopeConfig, **overrides: Any) -> TraderService:
    """The trader of ``config`` (``name``, ``live``, ``no_catch_up`` and ``clock`` may be overridden)."""
    name = overrides.get("name") or config.trader.service_name
    snapshots = [config.bus.snapshot] if config.bus.snapshot and not config.services.collector else []
    subscriber = service_subscriber(config, ["prediction.", "bar."],
                                    [endpoint_of(config, "rendezvous"), endpoint_of(config, "collector")],
                                    snapshot_endpoints=snapshots)
    publisher = service_publisher(config, name, endpoint_of(config, "trader"))
    binance = None
    try:
        if config.trader.broker == "binance":
            refuse_during_ban(config.trader, name)
            binance = binance_runtime(config, live=bool(overrides.get("live", False)))
        return TraderService(name, publisher, [subscriber], config.trader,
                             config.trader.symbols or config.collector.symbols, heartbeat_ms=config.bus.heartbeat_ms,
                             binance=binance, catch_up=not overrides.get("no_catch_up", False),
                             store=BarStore(config.store.path),
                             clock=overrides.get("clock"))
    except BaseException:
        subscriber.close()
        publisher.close()
        if binance is not None:
            binance.close()
        raise


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live", action="store_true", default=None,
                        help='allow real orders when trader.broker = "binance" (keys from BINANCE_API_KEY/SECRET)')
    parser.add_argument("--no-catch-up", action="store_true", default=None,
                        help="do not fetch the collector's recent bars at start")


def main(argv: list[str] | None = None) -> int:
    """``python -m dope.services.trader --config FILE [--name N] [--live]``."""
    try:
        return service_main(build, argv, prog="dope.services.trader", add_arguments=_add_arguments)
    except IpBanned as exc:  # exit 1: the supervisor starts it again later (exit 2 would be for good)
        print(f"dope.services.trader: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
