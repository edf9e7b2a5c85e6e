"""A small REST client for Binance's public endpoints that honours rate limits and retries.

429 and 418 answers wait the ``Retry-After`` seconds (counted as ``rate_limited`` / ``ip_banned``);
5xx answers and network errors are retried with exponential backoff and full jitter; any other
error raises :class:`BinanceAPIError` with Binance's code and message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping

import aiohttp

from dope.clock import Clock
from dope.market.binance_wire import parse_error

log = logging.getLogger("dope.market.binance")

RETRY_STATUSES = (429, 418)


class BinanceAPIError(RuntimeError):
    """Binance refused a request (4xx other than 429/418); ``code`` and ``msg`` are Binance's."""

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

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> bytes:
        """The body of a successful GET, retrying as long as it takes (cancel to stop)."""
        attempt = 0
        while True:
            outcome = await self._try(path, params or {})
            if isinstance(outcome, bytes):
                return outcome
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
            wait_ms = int(float(retry_after) * 1000) if retry_after else -1
            log.warning("Binance %s answered %d (%s); waiting %s ms", path, status, msg, wait_ms)
            return wait_ms
        if status >= 500:
            self._count("server_errors")
            log.warning("Binance %s answered %d (%s); retrying", path, status, msg)
            return -1
        raise BinanceAPIError(path, status, code, msg)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


def _strings(params: Mapping[str, str | int]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}
