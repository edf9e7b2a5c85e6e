"""A line on stderr while numba compiles for longer than a moment (the first run after an install).

numba compiles a function on its first call and caches the machine code on disk; a fresh
install (or an upgrade, or a new cache folder) compiles the backtest kernels and the feature
code again, which takes seconds with nothing printed. :func:`install` listens to numba's own
compile events and, once compiling has taken ``after_s`` in all (one long compile or many short
ones), says so once per process.

>>> import io, numba
>>> out = io.StringIO()
>>> notice = install(after_s=0.0, stream=out)
>>> numba.njit(lambda x: x + 1)(1)
2
>>> out.getvalue().startswith("compiling")
True
>>> uninstall(notice)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, TextIO

from numba.core import event

MESSAGE = "compiling numba code (first run after an install or upgrade; later runs load it from the cache)..."


class CompileNotice(event.Listener):  # type: ignore[misc]
    """Prints :data:`MESSAGE` once when compilations have lasted ``after_s`` seconds in all."""

    def __init__(self, after_s: float, stream: TextIO) -> None:
        self.after_s = after_s
        self.stream = stream
        self.printed = False
        self._depth = 0
        self._started = 0.0
        self._compiled_s = 0.0
        """Seconds spent in finished compilations (outermost ones only)."""
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_start(self, event: Any) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1 or self.printed:
                return  # nested: the function compiles what it calls
            self._started = time.monotonic()
            self._timer = threading.Timer(max(self.after_s - self._compiled_s, 0.0), self._say)
            self._timer.daemon = True
            self._timer.start()

    def on_end(self, event: Any) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0 or self._timer is None:
                return
            self._timer.cancel()
            self._timer = None
            self._compiled_s += time.monotonic() - self._started
            late = self._compiled_s >= self.after_s
        if late:  # the timer had no turn yet
            self._say()

    def _say(self) -> None:
        with self._lock:
            if self.printed:
                return
            self.printed = True
        with contextlib.suppress(ValueError):  # the stream was closed meanwhile (the process is ending)
            print(MESSAGE, file=self.stream, flush=True)


def install(after_s: float = 1.5, stream: TextIO | None = None) -> CompileNotice:
    """Listen to numba's compile events from now on (``stream``: stderr by default)."""
    notice = CompileNotice(after_s, stream if stream is not None else sys.stderr)
    event.register("numba:compile", notice)  # type: ignore[no-untyped-call]
    return notice


def uninstall(notice: CompileNotice) -> None:
    """Stop listening."""
    event.unregister("numba:compile", notice)  # type: ignore[no-untyped-call]
