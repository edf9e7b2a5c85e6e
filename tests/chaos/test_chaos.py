"""The chaos/soak suite: ``dope up`` under seeded SIGKILLs of every service and order-path faults of a fake
Binance. Asserted: no bar lost or altered, no order executed twice. Measured and printed against their
targets (docs/reliability.md): decisions lost, kill to healthy (p99 <= 5 s), memory growth (<= 20 MB/h).

The short run (about 2 minutes) is part of the normal suite. The full one runs with
``DOPE_CHAOS_MINUTES=30`` (figures to ``DOPE_CHAOS_OUT``, default ``var/chaos/figures.md``), or
``python -m tests.chaos.run --minutes 30 --doc docs/reliability.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.chaos import ChaosSettings, run_chaos
from tests.chaos.stack import StackSettings

pytestmark = [pytest.mark.slow, pytest.mark.chaos]
FULL_MINUTES = float(os.environ.get("DOPE_CHAOS_MINUTES", "0") or 0)


def test_short_chaos_run_loses_nothing_doubles_nothing_and_heals(tmp_path: Path) -> None:
    """75 s of chaos at 200x: a SIGKILL every ~5 s (a quarter of them two services at once), a fault every ~2 s."""
    settings = ChaosSettings(minutes=1.25, kill_period_s=5.0, fault_period_s=2.0, settle_s=12.0,
                             rss_warmup_s=20.0, check_memory=False, stack=StackSettings(speed=200.0))
    figures = run_chaos(tmp_path, settings)
    print(figures.table())
    services = {k.service for k in figures.kills}
    assert {"collector", "featurizer", "rendezvous", "trader"} <= services, services  # the killer reached them
    assert figures.orders["faults_met"] >= 10 and figures.orders["orders"] > 0 and figures.bars.reference > 100
    print("missed targets:", figures.missed_targets())
    assert figures.broken() == [], figures.table()


@pytest.mark.skipif(FULL_MINUTES <= 0, reason="the full chaos run (30 min) runs only with DOPE_CHAOS_MINUTES=30")
@pytest.mark.timeout(int(FULL_MINUTES * 60 + 900))
def test_full_chaos_run_writes_its_figures(tmp_path: Path) -> None:
    """A SIGKILL every ~30 s for ``DOPE_CHAOS_MINUTES``; the figures go to ``DOPE_CHAOS_OUT``."""
    figures = run_chaos(tmp_path, ChaosSettings(minutes=FULL_MINUTES, check_memory=False))
    out = Path(os.environ.get("DOPE_CHAOS_OUT", "var/chaos/figures.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(figures.table())
    assert figures.broken() == [], figures.table()
