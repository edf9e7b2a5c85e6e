"""The promotion test on 10,000 paired bars (target: at most 10 ms), against a plain numpy mean/var.

The baseline computes the mean and variance of both loss series over the same arrays, in the same run;
the gate adds the checks, the Newey–West variance (130 lags at 10,000 bars) and the p-value.

    .venv/bin/python -m bench.bench_gate [--bars 10000]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from bench.common import interleaved_times, median_ratio
from dope.loop.gate import promotion_test

TARGET_MS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=10_000)
    n = parser.parse_args().bars
    rng = np.random.default_rng(0)
    champion, candidate = rng.normal(size=n), rng.normal(size=n)
    champion_pnl, candidate_pnl = rng.normal(size=n), rng.normal(size=n)

    def baseline() -> object:
        return (np.mean(candidate**2), np.var(candidate**2), np.mean(champion**2), np.var(champion**2))

    def gate() -> object:
        return promotion_test(candidate, champion, candidate_pnl, champion_pnl, n_candidates=3)

    times = interleaved_times({"baseline": baseline, "gate": gate}, rounds=200)
    gate_ms = statistics.median(times["gate"]) * 1000
    print(f"{'numpy mean/var of both losses (baseline)':44} {statistics.median(times['baseline']) * 1000:9.3f} ms")
    print(f"{f'promotion test, {n} paired bars':44} {gate_ms:9.3f} ms  (target <= {TARGET_MS:.0f} ms)")
    print(f"{'ratio gate / baseline':44} {median_ratio(times['gate'], times['baseline']):9.1f} x")
    print(f"{'within target':44} {'yes' if gate_ms <= TARGET_MS else 'NO'}")


if __name__ == "__main__":
    main()
