"""One drift check of the health monitor (PSI and exact KS of every feature, and of the predictions) on
the default window (500 live vectors of the 21 default features against a 2,000-row reference), against
a plain numpy sort of the same pooled samples (the floor of any exact KS), measured in the same run.

The monitor checks every ``loop.drift_every`` (50) vectors, off the critical path (in the decoy); the
amortised cost per vector is printed too.

    .venv/bin/python -m bench.bench_drift [--window 500] [--features 21] [--reference 2000]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from bench.common import interleaved_times, median_ratio
from dope.loop.drift import PreparedReference, drift_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--features", type=int, default=21)
    parser.add_argument("--reference", type=int, default=2_000)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference, live = rng.normal(size=(args.reference, args.features)), rng.normal(size=(args.window, args.features))
    reference_pred, live_pred = rng.normal(size=args.reference), rng.normal(size=args.window)

    def baseline() -> object:
        return np.sort(np.concatenate([reference, live]), axis=0), np.sort(np.concatenate([reference_pred, live_pred]))

    prepared, prepared_pred = PreparedReference.of(reference), PreparedReference.of(reference_pred)

    def check() -> object:  # as the monitor does: the reference's bins are computed once per champion
        return drift_of(prepared, live), drift_of(prepared_pred, live_pred)

    times = interleaved_times({"baseline": baseline, "check": check}, rounds=50)
    check_ms = statistics.median(times["check"]) * 1000
    label = f"drift check, {args.window} x {args.features} vs {args.reference}"
    print(f"{'numpy sort of the pooled samples (baseline)':44} {statistics.median(times['baseline']) * 1000:9.3f} ms")
    print(f"{label:44} {check_ms:9.3f} ms")
    print(f"{f'amortised per vector (every {args.every})':44} {check_ms / args.every:9.3f} ms")
    print(f"{'ratio check / baseline':44} {median_ratio(times['check'], times['baseline']):9.1f} x")


if __name__ == "__main__":
    main()
