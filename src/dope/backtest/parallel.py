"""Run independent tasks serially or on Dask, in order, with a progress bar.

The same pure function runs on the same inputs either way, so a Dask run returns exactly what a serial run
returns. Big shared inputs are scattered once (``runner.share``) and tasks receive them as arguments.

>>> with SerialRunner(progress=False) as runner:
...     runner.map(abs, [-1, 2, -3], label="abs")
[1, 2, 3]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, Self, TypeVar

from tqdm import tqdm

from dope.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    """Maps a function over items, keeping their order."""

    def share(self, value: Any) -> Any:
        """A handle for a big input that many tasks use (the value itself when serial)."""
        ...

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any, label: str = "") -> list[R]:
        """``[fn(item, *shared) for item in items]``, in order."""
        ...


class SerialRunner:
    """Runs the tasks one after another in this process."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def share(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any, label: str = "") -> list[R]:
        bar = _bar(len(items), label, self.progress)
        out = []
        for item in items:
            out.append(fn(item, *shared))
            bar.update(1)
        bar.close()
        return out


class DaskRunner:
    """Runs the tasks on a Dask ``distributed.Client``; results come back in submission order."""

    def __init__(self, client: Any, progress: bool = True) -> None:
        self.client = client
        self.progress = progress

    def share(self, value: Any) -> Any:
        return self.client.scatter(value, broadcast=True, hash=False)

    def map(self, fn: Callable[..., R], items: Sequence[Any], *shared: Any, label: str = "") -> list[R]:
        from distributed import as_completed

        futures = [self.client.submit(fn, item, *shared, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(futures)
        bar = _bar(len(futures), label, self.progress)
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            out[index[future.key]] = future.result()
            bar.update(1)
        bar.close()
        return out


@contextmanager
def open_runner(scheduler: str | None = None, workers: int = 2, serial: bool = False,
                progress: bool = True) -> Iterator[Runner]:
    """A serial runner, a runner on the cluster at ``scheduler`` (tcp://host:port), or on a local cluster.

    The local cluster has ``workers`` single-threaded worker processes, everything (scheduler, workers, the
    scheduler's HTTP endpoint; no dashboard) bound to 127.0.0.1 on free ports, and is closed on exit.
    """
    if serial:
        yield SerialRunner(progress)
        return
    from distributed import Client, LocalCluster

    if scheduler:
        client = _connect(scheduler)
        try:
            yield DaskRunner(client, progress)
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                           host="127.0.0.1", dashboard_address=None,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        log.info("local Dask cluster: %d workers at %s", workers, cluster.scheduler_address)
        yield DaskRunner(client, progress)


def _connect(scheduler: str) -> Any:
    from distributed import Client

    try:
        return Client(scheduler, timeout=10)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc


def _bar(total: int, label: str, enabled: bool) -> tqdm[Any]:
    return tqdm(total=total, desc=label or None, disable=not enabled, file=sys.stderr, leave=False)
