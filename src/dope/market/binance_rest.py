"""A small REST client for Binance's public endpoints that honours rate limits and retries.

429 and 418 answers wait the ``Retry-After`` seconds (counted as ``rate_limited`` / ``ip_banned``).
What the exchange (or a proxy in front of it) may answer at any time is retried with capped
exponential backoff and full jitter and counted: 403 (Binance's WAF, ``forbidden``), 5xx
(``server_errors``), network errors (``rest_errors``) and a body that is not what the endpoint
documents, such as an HTML page (``bad_bodies``). Only a Binance error for a request it refuses
(4xx with a ``{"code","msg"}`` body: a bad symbol or parameter) or a 404 (a wrong ``rest_url``)
raises :class:`BinanceAPIError`: those are configuration errors, retrying cannot help.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import TypeVar

import aiohttp
import msgspec

from dope.clock import Clock
from dope.market.binance_wire import parse_error

log = logging.getLogger("dope.market.binance")

RETRY_STATUSES = (429, 418)
T = TypeVar("T")


class BinanceAPIError(RuntimeError):
    """Binance refused a request (a 4xx it explains, or 404); ``code`` and ``msg`` are Binance's."""

    def __init__(self, path: str, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"Binance {path} answered HTTP {status} (code {code}): {msg}")
        self.path, self.status, self.code, self.msg = path, status, code, msg


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(max, min * 2**n)) ms."""

    def __init__(self, min_ms: int, max_ms: int, rng: random.Random) -> None:
        self.min_ms, self.max_ms, self.rng = min_ms, max_ms, rng

    def delay_ms(self, attempt: int) -> int:
        cap = min(self.max_ms, self.min_ms * 2 ** min(attempt, 30))
        return int(self.rng.uniform(0, cap))


async def sleep_ms(clock: Clock, delay_ms: int) -> None:
    """Wait ``delay_ms`` on ``clock``."""
    await clock.sleep_until(clock.now_ms() + delay_ms)


class BinanceRest:
    """GET requests against ``base_url`` with Binance's retry rules; counts what happened in ``counters``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, counters: dict[str, int],
                 backoff: Backoff, clock: Clock, timeout_ms: int) -> None:
        self.session, self.base_url, self.counters = session, base_url.rstrip("/"), counters
        self.backoff, self.clock = backoff, clock
        self.timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)

    async def get(self, path: str, params: Mapping[str, str | int] | None, parse: Callable[[bytes], T]) -> T:
        """The parsed body of a successful GET, retrying as long as it takes (cancel to stop)."""
        attempt = 0
        while True:
            outcome = await self._try(path, params or {})
            if isinstance(outcome, bytes):
                try:
                    return parse(outcome)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self._count("bad_bodies")
                    log.warning("Binance %s answered 200 with an unreadable body (%s): %s; retrying",
                                path, exc, _preview(outcome))
                    outcome = -1
            await sleep_ms(self.clock, outcome if outcome >= 0 else self.backoff.delay_ms(attempt))
            attempt += 1

    async def _try(self, path: str, params: Mapping[str, str | int]) -> bytes | int:
        """The body, or how long to wait before retrying (-1: backoff)."""
        try:
            async with self.session.get(self.base_url + path, params=_strings(params), timeout=self.timeout) as resp:
                body = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count("rest_errors")
            log.warning("Binance %s request failed: %r; retrying", path, exc)
            return -1
        if status == 200:
            return body
        return self._retry_delay(path, status, retry_after, body)

    def _retry_delay(self, path: str, status: int, retry_after: str | None, body: bytes) -> int:
        error = parse_error(body)
        code, msg = (error.code, error.msg) if error else (None, body[:200].decode(errors="replace"))
        if status in RETRY_STATUSES:
            self._count("rate_limited" if status == 429 else "ip_banned")
            wait_ms = _retry_after_ms(retry_after)
            if wait_ms < 0:
                log.warning("Binance %s answered %d (%s) without a usable Retry-After; backing off", path, status, msg)
            else:
                log.warning("Binance %s answered %d (%s); waiting the Retry-After of %d ms", path, status, msg, wait_ms)
            return wait_ms
        transient = _transient_kind(status, error is not None)
        if transient is None:
            raise BinanceAPIError(path, status, code, msg)
        self._count(transient)
        log.warning("Binance %s answered %d (%s); retrying", path, status, msg if error else _preview(body))
        return -1

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _transient_kind(status: int, binance_error: bool) -> str | None:
    """The counter of an answer worth retrying (403 WAF, 5xx, a non-Binance body), or None: fatal."""
    if status == 403:
        return "forbidden"
    if status >= 500:
        return "server_errors"
    if not binance_error and status != 404:
        return "bad_bodies"
    return None


def _retry_after_ms(header: str | None) -> int:
    """The ``Retry-After`` header in ms, or -1 when it is absent or not a number of seconds."""
    try:
        return int(float(header) * 1000) if header else -1
    except ValueError:
        return -1


def _preview(body: bytes, size: int = 120) -> str:
    return repr(body[:size].decode(errors="replace"))


def _strings(params: Mapping[str, str | int]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}
