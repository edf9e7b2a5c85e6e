"""Where a service's memory goes: ``tracemalloc`` snapshots on request, and their difference.

With ``DOPE_TRACEMALLOC=DIR`` in its environment, a service process (``service_main``) traces its Python
allocations and writes a snapshot to ``DIR/<service>-<pid>-<n>.snap`` every ``DOPE_TRACEMALLOC_EVERY_S``
seconds (default 60). Tracing slows allocation-heavy code down (about twice), so it is for a soak
looking for a leak, never for production. Compare two snapshots of one process::

    python -m dope.memtrace DIR/decoy-123-1.snap DIR/decoy-123-9.snap [--top 15]

Buffers allocated outside Python's allocators (Arrow's memory pool) are not traced; numpy's are.
"""

from __future__ import annotations

import argparse
import os
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Final

ENV_DIR: Final = "DOPE_TRACEMALLOC"
ENV_EVERY: Final = "DOPE_TRACEMALLOC_EVERY_S"
FRAMES: Final = 8


def start_from_env(service: str) -> threading.Thread | None:
    """Start tracing and the snapshot thread when ``DOPE_TRACEMALLOC`` names a folder (else nothing)."""
    folder = os.environ.get(ENV_DIR, "")
    if not folder:
        return None
    every_s = float(os.environ.get(ENV_EVERY, "60"))
    if every_s <= 0:
        raise ValueError(f"{ENV_EVERY} must be > 0 seconds, got {every_s}")
    Path(folder).mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    thread = threading.Thread(target=_snapshots, args=(Path(folder), service, every_s),
                              name="dope-tracemalloc", daemon=True)
    thread.start()
    return thread


def _snapshots(folder: Path, service: str, every_s: float) -> None:
    count = 0
    stop = threading.Event()
    while not stop.wait(every_s):
        count += 1
        tracemalloc.take_snapshot().dump(str(folder / f"{service}-{os.getpid()}-{count}.snap"))


def top_growth(before: Path, after: Path, top: int = 15) -> list[str]:
    """The ``top`` allocation sites that grew most from ``before`` to ``after``, one line each."""
    old, new = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    stats = new.compare_to(old, "traceback")
    lines = []
    for stat in stats[:top]:
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback[:4])
        lines.append(f"{stat.size_diff / 1e6:+8.2f} MB {stat.count_diff:+8d} blocks  {where}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dope.memtrace", description=top_growth.__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print("\n".join(top_growth(args.before, args.after, args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
