"""The model registry: round trip, checksums, foreign artifacts, feature versions, roles."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dope.clock import SimulatedClock
from dope.models import make_model
from dope.models.registry import FeatureVersionError, Reference, Registry, RegistryError

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


@dataclass(frozen=True)
class FakeFeatureSet:
    name: str = "default"
    version: str = "abc123"
    names: tuple[str, ...] = ("ret_1", "ret_2", "vol")


def data(n: int = 200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([0.5, -0.2, 0.1]) + rng.normal(scale=0.1, size=n)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", clock=SimulatedClock(T0))


def register(registry: Registry, kind: str = "ridge", **params: object) -> str:
    X, y = data()
    model = make_model(kind, **params).fit(X, y)
    return registry.register(model, feature_set=FakeFeatureSet(), symbol="BTCUSDT", interval_ms=10_000,
                             train_start_ms=T0 - 86_400_000, train_end_ms=T0,
                             metrics={"model": {"rmse": 0.1, "ic": float("nan")}})


def model_file(registry: Registry, model_id: str) -> Path:
    return max((p for p in (registry.root / model_id / "model").rglob("*") if p.name != "model.json"
                and p.is_file()), key=lambda p: p.stat().st_size)


def test_round_trip_gives_identical_predictions_and_full_metadata(registry: Registry) -> None:
    X, y = data()
    original = make_model("ridge").fit(X, y)
    model_id = register(registry)
    loaded, meta = registry.load(model_id, feature_version="abc123")
    assert np.array_equal(loaded.predict_many(X), original.predict_many(X))
    assert model_id.startswith("ridge-20260101T0000-")
    assert meta["kind"] == "ridge" and meta["created_ms"] == T0 and meta["created"] == "2026-01-01T00:00:00Z"
    assert meta["feature_set"] == {"name": "default", "version": "abc123", "names": ["ret_1", "ret_2", "vol"]}
    assert meta["data"]["symbol"] == "BTCUSDT" and meta["data"]["train_end_ms"] == T0
    assert meta["metrics"]["model"] == {"rmse": 0.1, "ic": None}
    assert {"numpy", "scikit-learn", "python"} <= set(meta["libraries"])
    assert all(len(entry["sha256"]) == 64 for entry in meta["files"].values())
    assert model_id[-6:] == meta["artifact_sha256"][:6]


def test_same_model_twice_gets_two_ids(registry: Registry) -> None:
    first, second = register(registry, "zero"), register(registry, "zero")  # byte-identical artifacts
    assert second == f"{first}-2"
    assert [m["model_id"] for m in registry.list()] == [first, second]


def test_corrupted_file_is_refused_naming_it(registry: Registry) -> None:
    model_id = register(registry)
    target = model_file(registry, model_id)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match=f"{target.name} is corrupt"):
        registry.load(model_id)


def test_truncated_file_is_refused(registry: Registry) -> None:
    model_id = register(registry)
    target = model_file(registry, model_id)
    target.write_bytes(target.read_bytes()[:10])
    with pytest.raises(RegistryError, match=f"{target.name} is truncated"):
        registry.load(model_id)


def test_missing_file_is_refused(registry: Registry) -> None:
    model_id = register(registry)
    model_file(registry, model_id).unlink()
    with pytest.raises(RegistryError, match="artifact file missing"):
        registry.load(model_id)


def test_truncated_metadata_is_refused(registry: Registry) -> None:
    model_id = register(registry)
    path = registry.root / model_id / "metadata.json"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RegistryError, match="metadata.json is corrupt or truncated"):
        registry.load(model_id)


def test_edited_metadata_is_refused(registry: Registry) -> None:
    model_id = register(registry)
    path = registry.root / model_id / "metadata.json"
    meta = json.loads(path.read_text())
    meta["data"]["train_end_ms"] = 0  # would let predict report on training rows
    path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="modified after registration"):
        registry.load(model_id)


def test_foreign_artifact_metadata_of_another_model_is_refused(registry: Registry) -> None:
    first, second = register(registry), register(registry, "zero")
    (registry.root / second / "metadata.json").write_bytes((registry.root / first / "metadata.json").read_bytes())
    with pytest.raises(RegistryError, match=f"foreign artifact.*describes '{first}'"):
        registry.load(second)


def test_foreign_folder_and_extra_files_are_refused(registry: Registry) -> None:
    (registry.root / "stranger").mkdir(parents=True)
    (registry.root / "stranger" / "metadata.json").write_text('{"hello": 1}')
    with pytest.raises(RegistryError, match="not a DOPE model artifact"):
        registry.load("stranger")
    model_id = register(registry)
    (registry.root / model_id / "model" / "payload.pkl").write_bytes(b"\x80\x04evil")
    with pytest.raises(RegistryError, match="foreign file.*payload.pkl"):
        registry.load(model_id)


def test_checksums_are_checked_before_deserialising(tmp_path: Path) -> None:
    calls: list[Path] = []
    registry = Registry(tmp_path, clock=SimulatedClock(T0), loader=lambda d: calls.append(d))
    model_id = register(registry)
    model_file(registry, model_id).write_bytes(b"garbage")
    with pytest.raises(RegistryError):
        registry.load(model_id)
    assert calls == []


def test_feature_version_mismatch_is_refused(registry: Registry) -> None:
    model_id = register(registry)
    with pytest.raises(FeatureVersionError, match="version abc123, but the features offered are version zzz"):
        registry.load(model_id, feature_version="zzz")


def test_unknown_id_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no model 'nope'"):
        registry.load("nope")
    with pytest.raises(RegistryError, match="bad model id"):
        registry.load("../etc")


def test_roles_promote_retire_and_revision(registry: Registry) -> None:
    first, second = register(registry), register(registry, "zero")
    assert registry.roles() == {} and registry.revision() == 0
    registry.promote(first)
    registry.promote(second, "canary")
    assert registry.champion() == first
    registry.promote(second)  # a new champion: the old one becomes a challenger
    assert registry.roles() == {first: "challenger", second: "champion"}
    registry.retire(first)
    assert registry.roles()[first] == "retired" and registry.revision() == 4
    state = json.loads((registry.root / "roles.json").read_text())
    assert state["revision"] == 4 and state["updated_ms"] == T0
    assert [m["role"] for m in registry.list()] == ["retired", "champion"]


def test_promote_refuses_unknown_role_and_broken_artifact(registry: Registry) -> None:
    model_id = register(registry)
    with pytest.raises(RegistryError, match="unknown role 'boss'"):
        registry.promote(model_id, "boss")
    model_file(registry, model_id).write_bytes(b"x")
    with pytest.raises(RegistryError, match="truncated"):
        registry.promote(model_id)
    assert registry.roles() == {}


def test_list_reports_a_broken_artifact_without_failing(registry: Registry) -> None:
    model_id = register(registry)
    (registry.root / model_id / "metadata.json").write_text("{")
    [entry] = registry.list()
    assert entry["model_id"] == model_id and "corrupt or truncated" in entry["error"]


def reference_of(n: int = 50) -> Reference:
    X, _ = data(n, seed=9)
    return Reference(FakeFeatureSet().names, X, X[:, 0] * 0.5)


def register_with_reference(registry: Registry, reference: Reference) -> str:
    X, y = data()
    return registry.register(make_model("ridge").fit(X, y), feature_set=FakeFeatureSet(), symbol="BTCUSDT",
                             interval_ms=10_000, train_start_ms=T0 - 86_400_000, train_end_ms=T0,
                             reference=reference)


def test_reference_sample_round_trips_inside_the_checksummed_artifact(registry: Registry) -> None:
    saved = reference_of()
    model_id = register_with_reference(registry, saved)
    back = registry.reference(model_id)
    assert back.feature_names == ("ret_1", "ret_2", "vol")
    assert np.array_equal(back.features, saved.features) and np.array_equal(back.predictions, saved.predictions)
    assert back.features.dtype == np.float64 and back.predictions.shape == (50,)
    assert "reference.npz" in registry.verify(model_id)["files"]


def test_corrupt_or_missing_reference_sample_is_refused_naming_it(registry: Registry) -> None:
    model_id = register_with_reference(registry, reference_of())
    path = registry.root / model_id / "reference.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="reference.npz is corrupt"):
        registry.reference(model_id)
    path.unlink()
    with pytest.raises(RegistryError, match="reference.npz"):
        registry.reference(model_id)


def test_a_model_without_reference_sample_says_so(registry: Registry) -> None:
    model_id = register(registry)  # as every artifact registered before reference samples
    registry.verify(model_id)
    with pytest.raises(RegistryError, match=f"model {model_id} has no reference sample"):
        registry.reference(model_id)
    (registry.root / model_id / "reference.npz").write_bytes(b"planted")
    with pytest.raises(RegistryError, match="foreign file"):
        registry.reference(model_id)


def test_reference_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="do not agree"):
        Reference(("a", "b"), np.zeros((4, 3)), np.zeros(4))


def test_staging_folders_are_never_listed_and_abandoned_ones_are_cleaned(registry: Registry) -> None:
    model_id = register(registry)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    abandoned = registry.root / f".staging-{host}-{dead.pid}-{'a' * 32}"
    shutil.copytree(registry.root / model_id, abandoned)  # killed after writing metadata, before the rename
    alive = registry.root / f".staging-{host}-{os.getpid()}-{'b' * 32}"
    alive.mkdir()
    elsewhere = registry.root / f".staging-otherhost-1-{'c' * 32}"
    elsewhere.mkdir()
    assert [m["model_id"] for m in registry.list()] == [model_id]
    assert registry.clean_staging() == [abandoned.name]
    assert alive.is_dir() and elsewhere.is_dir()
    old = time.time() - 7 * 3600
    os.utime(elsewhere, (old, old))
    assert registry.clean_staging() == [elsewhere.name]
    assert sorted(p.name for p in registry.root.iterdir()) == sorted([alive.name, model_id])
