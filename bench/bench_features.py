"""The online featurizer, one bar at a time, on synthetic 10 s bars.

Target (issue 3): at least 50,000 bars/s per process. Baselines measured in the same run:
building the ``Bar`` messages the featurizer consumes (``dope.bars.bars_from_frame``, no
features at all) and the offline path (``compute_features`` on the whole frame, the same
compiled step in a compiled loop). The online run also encodes nothing: it returns the
``Features`` messages a service would publish.

    .venv/bin/python -m bench.bench_features [--bars 200000]
"""

from __future__ import annotations

import argparse

from bench.common import best_time, report
from dope.bars import bars_from_frame
from dope.features import OnlineFeaturizer, compute_features, default_feature_set
from dope.market.synthetic import generate_bars
from dope.messages import Bar

START_MS = 1_704_067_200_000
INTERVAL_MS = 10_000


def online_pass(bars: list[Bar], context: list[Bar] | None) -> int:
    """Feed every bar to a fresh featurizer; the number of vectors emitted."""
    fs = default_feature_set(INTERVAL_MS, ("BTCUSDT",) if context else ())
    featurizer = OnlineFeaturizer(fs, bars[0].symbol)
    if context is None:
        return sum(featurizer.update(bar) is not None for bar in bars)
    return sum(featurizer.update(bar, {"BTCUSDT": other}) is not None
               for bar, other in zip(bars, context, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=200_000)
    n = parser.parse_args().bars
    frames = generate_bars(["BTCUSDT", "ETHUSDT"], START_MS, START_MS + n * INTERVAL_MS, seed=3)
    eth, btc = frames["ETHUSDT"], frames["BTCUSDT"]
    eth_bars, btc_bars = bars_from_frame(eth, INTERVAL_MS), bars_from_frame(btc, INTERVAL_MS)
    fs = default_feature_set(INTERVAL_MS)
    online = best_time(lambda: online_pass(eth_bars, None))
    online_ctx = best_time(lambda: online_pass(eth_bars, btc_bars))
    offline = best_time(lambda: compute_features(eth, fs))
    make_bars = best_time(lambda: bars_from_frame(eth, INTERVAL_MS))
    print(f"{n} bars, {len(fs.names)} features (+3 with BTCUSDT context), warm-up {fs.warmup} bars")
    report("OnlineFeaturizer.update (ETHUSDT)", online, n, "bars")
    report("OnlineFeaturizer.update (ETHUSDT + BTCUSDT ctx)", online_ctx, n, "bars")
    report("baseline: offline compute_features", offline, n, "bars")
    report("baseline: bars_from_frame (build Bar objects)", make_bars, n, "bars")
    print(f"online: {n / online:,.0f} bars/s (target >= 50,000), with context {n / online_ctx:,.0f} bars/s")
    print(f"online time relative to building the Bar objects: {online / make_bars:.2f}x")
    print(f"online time relative to the offline path: {online / offline:.1f}x")


if __name__ == "__main__":
    main()
