"""Run the full chaos/soak suite and write its figures.

    .venv/bin/python -m tests.chaos.run --minutes 30 --doc docs/reliability.md
    .venv/bin/python -m tests.chaos.run --minutes 20 --no-kills --rss-warmup 180   # the memory soak

writes the markdown table to ``--out`` (default ``var/chaos/figures.md``), puts it into ``--doc``
between its figure markers when given, and exits 1 when a target was missed (each one printed).
The memory target is held only by a soak (``--no-kills``, 10 minutes or more): between kills a
process lives about 3 minutes, too short to tell growth from warm-up (a chaos run reports it).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from tests.chaos.chaos import ChaosSettings, run_chaos
from tests.chaos.report import write_into_doc
from tests.chaos.stack import StackSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of chaos once the stack is up")
    parser.add_argument("--kill-every", type=float, default=30.0, help="mean seconds between two kills")
    parser.add_argument("--fault-every", type=float, default=10.0, help="mean seconds between exchange faults")
    parser.add_argument("--no-kills", action="store_true", help="a soak: no SIGKILL (memory growth without restarts)")
    parser.add_argument("--rss-warmup", type=float, default=60.0,
                        help="seconds of every process lifetime left out of the memory slopes")
    parser.add_argument("--speed", type=float, default=50.0, help="speed of the synthetic market")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", default="var/chaos/figures.md", help="where the markdown table goes")
    parser.add_argument("--doc", help="also put the table into this page (docs/reliability.md)")
    parser.add_argument("--work", help="keep the run's files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    settings = ChaosSettings(minutes=args.minutes, kill_period_s=math.inf if args.no_kills else args.kill_every,
                             fault_period_s=args.fault_every, seed=args.seed, rss_warmup_s=args.rss_warmup,
                             check_memory=args.no_kills and args.minutes >= 10, stack=StackSettings(speed=args.speed))
    with tempfile.TemporaryDirectory(prefix="dope-chaos-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = run_chaos(work, settings)
    table = figures.table()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    if args.doc:
        write_into_doc(Path(args.doc), table)
    print(table)
    missed = figures.failures()
    for line in missed:
        print(f"MISSED: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
