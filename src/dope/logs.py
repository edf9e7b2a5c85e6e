"""Logging set-up, and counted problems that are logged without flooding the log."""

from __future__ import annotations

import logging
import sys
from collections import Counter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr in one line per record (stdout stays for data)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)


class ProblemCounter:
    """Counts problems by kind and logs them: every one of the first ``verbose`` of a kind,
    then one in ``every`` (saying how many so far), so nothing is hidden and the log stays readable.

    >>> problems = ProblemCounter(logging.getLogger("doc"))
    >>> problems.report("nan_price", "BTCUSDT trade 7: price is NaN")
    >>> problems.counts["nan_price"]
    1
    """

    def __init__(self, logger: logging.Logger, verbose: int = 10, every: int = 1000) -> None:
        self.logger = logger
        self.counts: Counter[str] = Counter()
        self._verbose = verbose
        self._every = every

    def report(self, kind: str, message: str) -> None:
        """Count one problem of ``kind`` and log it if it is among those shown."""
        self.counts[kind] += 1
        n = self.counts[kind]
        if n <= self._verbose or n % self._every == 0:
            self.logger.warning("%s (%s #%d)", message, kind, n)
