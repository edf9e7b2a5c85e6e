"""``dope status``: each service's health, lag and throughput, from the running ``dope up``.

    dope status                  # the run in var/run
    dope status --run-dir DIR --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dope.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dope status``."""
    parser.add_argument("--run-dir", default="var/run", help="the run directory of `dope up` (default var/run)")
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The supervisor's ``status.json``; ``UserError`` when there is none or it is unreadable."""
    path = run_dir / "status.json"
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {path}: is `dope up --run-dir {run_dir}` running?") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    return status


def format_status(status: dict[str, Any], now_ms: int) -> str:
    """A table: service, state, health (heartbeat age), lag, throughput, restarts, pid."""
    age = (now_ms - int(status.get("updated_ms", 0))) / 1000
    run = f"run {status['run_id']}, " if status.get("run_id") else ""
    lines = [f"{run}supervisor pid {status.get('supervisor_pid')}, status written {age:.1f} s ago"
             + (" (STALE: is dope up still running?)" if age > 10 else "")
             + (f"; metrics {status['metrics']}" if status.get("metrics") else ""),
             f"{'service':28} {'state':9} {'health':8} {'heartbeat':>9} {'lag':>8} {'msg/s':>9} {'restarts':>8} {'pid':>7}"]
    for name, s in status.get("services", {}).items():
        beat = s.get("heartbeat_age_s")
        lines.append(f"{name:28} {s['state']:9} {'up' if s['up'] else 'DOWN':8} "
                     f"{'-' if beat is None else f'{beat:.1f}s':>9} {s['lag_s']:>7.1f}s {s['throughput']:>9.1f} "
                     f"{s['restarts']:>8} {s['pid'] or '-':>7}")
        if "health.drift_alarm" in s.get("counters", {}):
            lines.append(health_line(name, s["counters"]))
    return "\n".join(lines)


def health_line(service: str, counters: dict[str, int]) -> str:
    """The model-health counters of ``service`` (the decoy's monitor, ``docs/loop.md``) in one line."""
    alarm = "DRIFT ALARM" if counters.get("health.drift_alarm") else "no drift alarm"
    return (f"  model health ({service}): {alarm}, max PSI {counters.get('health.max_psi_milli', 0) / 1000:.3f}, "
            f"max KS {counters.get('health.max_ks_milli', 0) / 1000:.3f}, gaps {counters.get('health.gaps', 0)}, "
            f"empty bars {counters.get('health.empty_bars', 0)}, late trades {counters.get('health.late_trades', 0)}, "
            f"stale feeds {counters.get('health.stale', 0)}")


def run(args: argparse.Namespace) -> int:
    """Print the status; exit 1 when a service is down."""
    status = read_status(Path(args.run_dir))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status, time.time_ns() // 1_000_000))
    return 0 if all(s["up"] or s["state"] == "done" for s in status.get("services", {}).values()) else 1
