"""Which model services subscribe to the collector's bars: online learners and role followers only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dope.config import DopeConfig, config_from_dict
from dope.features import default_feature_set
from dope.models import make_model
from dope.models.registry import Registry
from dope.services.model import reads_bars
from dope.services.supervisor import plan_services

INTERVAL = 10_000


def registered(registry: Registry, kind: str) -> str:
    fs = default_feature_set(INTERVAL)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(fs.names)))
    model = make_model(kind).fit(X, rng.normal(0, 1e-3, 300))
    return registry.register(model, feature_set=fs, symbol="BTCUSDT", interval_ms=INTERVAL,
                             train_start_ms=0, train_end_ms=300 * INTERVAL)


def config_deploying(tmp_path: Path, targets: list[str]) -> DopeConfig:
    return config_from_dict({
        "registry": {"path": str(tmp_path / "registry")},
        "supervisor": {"services": ["featurizer", "models", "trader", "collector"]},
        "models": {"deploy": [{"model": t, "endpoint": f"tcp://127.0.0.1:{6000 + i}"} for i, t in enumerate(targets)]},
    })


def test_only_online_models_and_roles_read_bars_and_the_collector_waits_for_exactly_them(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    static, online = registered(registry, "ridge"), registered(registry, "online_ridge")
    assert registry.show(online)["learns_online"] and not registry.show(static)["learns_online"]
    config = config_deploying(tmp_path, [static, online, "role:champion", "no-such-model"])
    assert [reads_bars(config, i) for i in range(4)] == [False, True, True, True]
    collector = next(s for s in plan_services(config) if s.is_source)
    readers = int(collector.args[collector.args.index("--wait-subscribers") + 1])
    assert readers == 2 + 3 + 1  # featurizer and trader, three model services, the supervisor
