"""Individual trades of the synthetic market, and :class:`SyntheticSource`, the live trade source.

Each model step's ``N`` trades (``B`` of them taker buys) get uniform times in the
step, prices on a Brownian bridge from the step's start to its close (the last trade
is exactly the close that :func:`dope.market.synthetic.generate_bars` reports),
log-normal sizes on the quantity step, and a random order of the buy/sell sides.
Trades of hour ``h`` use a generator seeded by ``(seed, symbol, h)``: resuming
anywhere replays exactly the trades of an uninterrupted run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import numpy as np

from dope.bars.vectorized import TradeArrays
from dope.clock import Clock, ScaledClock
from dope.errors import UserError
from dope.market.config import SyntheticConfig, SyntheticRegime
from dope.market.synthetic_model import STEP_MS, TRADES, State, Steps, SymbolModel, stream
from dope.market.synthetic_params import SymbolParams, SyntheticParams, load_params
from dope.messages import Trade
from dope.timeparse import parse_duration, parse_time
from dope.types import DAY_MS, HOUR_MS, FloatArray


def on_grid(values: FloatArray, grid: float, *, floor_one: bool = True) -> FloatArray:
    """``values`` rounded to the nearest multiple of ``grid`` (at least one grid step if ``floor_one``)."""
    units = np.round(values / grid)
    if floor_one:
        units = np.maximum(units, 1.0)
    return np.round(units * grid, _decimals(grid))


def _decimals(grid: float) -> int:
    text = f"{grid:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def model_for(symbol: str, params: SyntheticParams, seed: int, step_ms: int = STEP_MS,
              rate_scale: float = 1.0, regimes: Sequence[SyntheticRegime] = ()) -> SymbolModel:
    """The seeded model of ``symbol`` (with its leader's parameters when it follows one)."""
    own = params.for_symbol(symbol)
    leader = params.for_symbol(own.leader) if own.leader else None
    return SymbolModel(symbol, own, seed, step_ms=step_ms, leader=leader, rate_scale=rate_scale,
                       regimes=regimes)


def step_trades(steps: Steps, p: SymbolParams, rng: np.random.Generator, first_id: int,
                step_ms: int = STEP_MS) -> TradeArrays:
    """The individual trades of ``steps`` (ids from ``first_id``), ordered by time."""
    group = np.repeat(np.arange(len(steps)), steps.count)
    frac = np.sort(group + rng.random(len(group))) - group
    time = steps.open_time[group] + np.minimum((frac * step_ms).astype(np.int64), step_ms - 1)
    price = on_grid(np.exp(_bridge(steps, group, frac, rng)), p.tick_size)
    qty = rng.lognormal(np.log(p.mean_trade_size) - p.size_log_sd**2 / 2, p.size_log_sd, len(group))
    qty = on_grid(qty, p.step_size)
    buyer = _sides(steps, group, rng)
    ids = first_id + np.arange(len(group), dtype=np.int64)
    return TradeArrays.raw(time, ids, price, qty, ~buyer)


def _bridge(steps: Steps, group: np.ndarray, frac: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Log prices at the trade times: Brownian paths pinned to each step's close at its last trade."""
    if len(group) == 0:
        return np.empty(0)
    starts = np.cumsum(steps.count) - steps.count
    ends = starts + steps.count - 1
    gap = frac - np.where(np.arange(len(group)) == starts[group], 0.0, np.roll(frac, 1))
    walk = np.cumsum(rng.standard_normal(len(group)) * steps.sigma[group] * np.sqrt(gap))
    walk -= np.where(starts > 0, walk[np.maximum(starts - 1, 0)], 0.0)[group]
    traded = steps.count > 0
    end_walk = np.zeros(len(steps))
    end_frac = np.ones(len(steps))
    end_walk[traded], end_frac[traded] = walk[ends[traded]], frac[ends[traded]]
    target = (steps.x_end - steps.x_start)[group]
    x = steps.x_start[group] + walk - frac / end_frac[group] * (end_walk[group] - target)
    x[ends[traded]] = steps.x_end[traded]
    return np.asarray(x, dtype=np.float64)


def _sides(steps: Steps, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True for the taker buys: exactly ``buys`` of each step's trades, in random positions."""
    order = np.argsort(group + rng.random(len(group)), kind="stable")
    starts = np.cumsum(steps.count) - steps.count
    rank = np.arange(len(group)) - starts[group]
    buyer = np.empty(len(group), dtype=bool)
    buyer[order] = rank < steps.buys[group]
    return buyer


class _SymbolStream:
    """The trades of one symbol, an hour at a time, from the model's start."""

    def __init__(self, model: SymbolModel, start_ms: int) -> None:
        self.model = model
        self._state: State = model.initial_state()
        self._day: Steps | None = None
        self._next_from = start_ms
        self._ids_before_day = 1

    def hour(self, hour_ms: int) -> tuple[Steps, int]:
        """The steps of the hour starting at ``hour_ms`` and the id of its first trade."""
        day = self._day_of(hour_ms)
        i0 = int(np.searchsorted(day.open_time, hour_ms))
        i1 = int(np.searchsorted(day.open_time, hour_ms + HOUR_MS))
        first_id = self._ids_before_day + int(day.count[:i0].sum())
        sliced = Steps(*(getattr(day, n)[i0:i1] for n in ("open_time", "sigma", "x_start", "x_end",
                                                            "count", "buys")))
        return sliced, first_id

    def _day_of(self, time_ms: int) -> Steps:
        while self._day is None or time_ms >= self._day.open_time[-1] + self.model.step_ms:
            if self._day is not None:
                self._ids_before_day += int(self._day.count.sum())
            self._day = self.model.simulate_day(self._state, self._next_from)
            self._next_from = (self._next_from // DAY_MS + 1) * DAY_MS
        return self._day

    def trades(self, hour_ms: int) -> TradeArrays:
        """The trades of the hour starting at ``hour_ms``."""
        steps, first_id = self.hour(hour_ms)
        rng = stream(self.model.seed, self.model.symbol, TRADES, hour_ms // HOUR_MS)
        return step_trades(steps, self.model.params, rng, first_id, self.model.step_ms)


class SyntheticSource:
    """A :class:`dope.market.base.TradeSource` of seeded synthetic trades.

    Trades start at ``start_ms`` (aligned down to 10 s) and stop at
    ``start_ms + duration_ms`` (never, with None). They are yielded one batch per
    10 s window, paced by ``clock`` (or, with ``speed`` > 0, a clock running
    ``speed`` times real time; ``speed`` 0 and no clock: as fast as possible).
    ``regimes`` switch the market's dynamics at given times, exactly as in ``generate_bars``.
    """

    is_live = False
    """Replayed history: bars close on event time, never on the wall clock."""

    def __init__(self, symbols: Sequence[str], *, seed: int = 7, start_ms: int, duration_ms: int | None = None,
                 speed: float = 0.0, clock: Clock | None = None, params: SyntheticParams | None = None,
                 rate_scale: float = 1.0, wall: Clock | None = None,
                 regimes: Sequence[SyntheticRegime] = ()) -> None:
        if not symbols or len(set(symbols)) != len(symbols):
            raise UserError(f"SyntheticSource needs distinct symbols, got {list(symbols)}")
        if duration_ms is not None and duration_ms <= 0:
            raise UserError(f"duration must be > 0 ms, got {duration_ms}")
        self.symbols = list(symbols)
        self.start_ms = start_ms - start_ms % STEP_MS
        self.end_ms = None if duration_ms is None else start_ms + duration_ms
        self.counters: dict[str, int] = {"trades": 0, "batches": 0}
        self._params = params or load_params()
        self._seed, self._rate_scale, self._regimes = seed, rate_scale, tuple(regimes)
        self._clock, self._speed, self._wall = clock, speed, wall

    async def trades(self, resume: Mapping[str, int]) -> AsyncIterator[list[Trade]]:
        """Batches of trades (one per 10 s window, all symbols), none before ``resume[symbol]``."""
        streams = {s: _SymbolStream(model_for(s, self._params, self._seed, STEP_MS, self._rate_scale,
                                              self._regimes), self.start_ms) for s in self.symbols}
        hour = self.start_ms - self.start_ms % HOUR_MS
        clock = self._clock if self._clock is not None else self._paced_from(resume)
        while self.end_ms is None or hour < self.end_ms:
            for batch in self._hour_batches(streams, hour, resume):
                if clock is not None:
                    await clock.sleep_until(batch[-1].event_time)
                else:
                    await asyncio.sleep(0)
                self.counters["trades"] += len(batch)
                self.counters["batches"] += 1
                yield batch
            hour += HOUR_MS

    @classmethod
    def from_config(cls, config: SyntheticConfig, symbols: Sequence[str]) -> SyntheticSource:
        """The market ``[synthetic]`` describes: seed, start, duration ("" = endless), speed, params file,
        rate scale and regimes."""
        return cls(symbols, seed=config.seed, start_ms=parse_time(config.start),
                   duration_ms=parse_duration(config.duration) if config.duration else None,
                   speed=config.speed, params=load_params(config.params or None), rate_scale=config.rate_scale,
                   regimes=config.regimes)

    def _paced_from(self, resume: Mapping[str, int]) -> Clock | None:
        """With ``speed`` > 0, a clock whose market time starts where the stream resumes (not at ``start_ms``:
        a restarted collector must not sit out the time it had already run)."""
        if self._speed <= 0:
            return None
        origin = min(max(resume.get(s, self.start_ms), self.start_ms) for s in self.symbols)
        return ScaledClock(origin, self._speed, self._wall)

    def _hour_batches(self, streams: Mapping[str, _SymbolStream], hour: int,
                      resume: Mapping[str, int]) -> Iterator[list[Trade]]:
        parts: dict[str, TradeArrays] = {}
        for symbol, sym_stream in streams.items():
            floor = max(resume.get(symbol, self.start_ms), self.start_ms)
            if hour + HOUR_MS <= floor:
                sym_stream.hour(hour)  # advance the model only
                continue
            parts[symbol] = _kept(sym_stream.trades(hour), floor, self.end_ms)
        yield from _by_window(parts)


def _kept(arrays: TradeArrays, floor: int, end: int | None) -> TradeArrays:
    """The trades at or after ``floor`` and before ``end``."""
    keep = arrays.time >= floor
    if end is not None:
        keep &= arrays.time < end
    return TradeArrays.raw(arrays.time[keep], arrays.trade_id[keep], arrays.price[keep], arrays.qty[keep],
                           arrays.is_buyer_maker[keep])


def _by_window(parts: Mapping[str, TradeArrays]) -> Iterator[list[Trade]]:
    """The trades of every symbol ordered by (time, symbol, id), as messages one 10 s window at a time:
    an hour's trades stay arrays (about 33 bytes a trade) and only a window's become Python objects."""
    names = sorted(parts)
    if not names:
        return
    time = np.concatenate([parts[s].time for s in names])
    symbol = np.concatenate([np.full(len(parts[s].time), i) for i, s in enumerate(names)])
    trade_id = np.concatenate([parts[s].trade_id for s in names])
    order = np.lexsort((trade_id, symbol, time))
    columns = (time[order], symbol[order], trade_id[order], np.concatenate([parts[s].price for s in names])[order],
               np.concatenate([parts[s].qty for s in names])[order],
               np.concatenate([parts[s].is_buyer_maker for s in names])[order])
    cuts = np.flatnonzero(np.diff(columns[0] // STEP_MS)) + 1
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(time)].tolist(), strict=True):
        if hi > lo:
            yield [Trade(symbol=names[k], event_time=t, trade_id=i, price=p, qty=q, is_buyer_maker=m,
                         source="synthetic")
                   for t, k, i, p, q, m in zip(*(c[lo:hi].tolist() for c in columns), strict=True)]
