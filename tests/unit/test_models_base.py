"""The model protocol's contract: kinds, parameters, input checks, model.json and safe loading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dope.models import MODEL_KINDS, Model, ModelError, load_model, make_model
from dope.models.base import file_checksums, skops_dump
from dope.models.baselines import MomentumModel, RidgeModel
from dope.models.forest import RandomForestModel
from tests.models_conformance import sample_data


def test_kinds_and_protocol() -> None:
    assert MODEL_KINDS == ("random_forest", "lstm", "lightgbm", "zero", "momentum", "ridge", "online_ridge")
    model = make_model("ridge", alpha=2.0)
    assert isinstance(model, Model) and model.kind == "ridge" and model.lookback == 1
    assert model.params.alpha == 2.0 and model.n_features is None


def test_unknown_kind_and_parameters_are_named() -> None:
    with pytest.raises(ModelError, match="unknown model kind 'svm'.*random_forest"):
        make_model("svm")
    with pytest.raises(ModelError, match="'random_forest'.*n_trees"):
        make_model("random_forest", n_trees=10)


@pytest.mark.parametrize(("X", "message"), [
    (np.ones(5), "must be 2-D"),
    (np.array([[1.0, np.nan]] * 3), r"non-finite value .* index \(0, 1\)"),
    (np.array([[1.0, 2.0], [np.inf, 1.0], [0.0, 0.0]]), r"index \(1, 0\)"),
])
def test_bad_features_are_refused(X: np.ndarray, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        make_model("ridge").fit(X, np.zeros(len(X)))


def test_bad_targets_and_shapes_are_refused() -> None:
    X, y = sample_data(n=50, n_features=3)
    with pytest.raises(ModelError, match=r"shape \(50,\)"):
        make_model("ridge").fit(X, y[:-1])
    with pytest.raises(ModelError, match="y holds a non-finite"):
        make_model("ridge").fit(X, np.where(np.arange(50) == 7, np.nan, y))
    model = make_model("ridge").fit(X, y)
    with pytest.raises(ModelError, match="has 2 features, the model was fitted on 3"):
        model.predict_many(X[:, :2])
    with pytest.raises(ModelError, match="1 rows"):
        model.predict_one(X[:2])


def test_unfitted_models_say_so(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not fitted yet"):
        make_model("random_forest").predict_one(np.zeros(3))
    with pytest.raises(ModelError, match="not fitted yet"):
        make_model("zero").save(tmp_path)


def test_metadata_names_kind_params_and_library_versions() -> None:
    X, y = sample_data(n=200, n_features=4)
    meta = make_model("random_forest", n_estimators=5, n_jobs=1).fit(X, y).metadata()
    assert meta["kind"] == "random_forest" and meta["n_features"] == 4 and meta["lookback"] == 1
    assert meta["params"]["n_estimators"] == 5 and meta["params"]["max_depth"] == 10
    assert {"numpy", "scikit-learn", "skops", "numba"} <= set(meta["libraries"])
    json.dumps(meta)


def test_model_json_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model.json is missing"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": 1, "kind": "ridge", "files": {}}))
    with pytest.raises(ModelError, match=r"lacks the fields \['n_features', 'params'\]"):
        load_model(tmp_path)
    info = {"format": 9, "kind": "ridge", "params": {}, "n_features": 1, "files": {}}
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="format 9"):
        load_model(tmp_path)


def test_loading_as_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    X, y = sample_data(n=100, n_features=3)
    make_model("ridge").fit(X, y).save(tmp_path)
    with pytest.raises(ModelError, match="holds a 'ridge' model, not 'random_forest'"):
        RandomForestModel.load(tmp_path)


def test_skops_file_with_unexpected_types_is_refused(tmp_path: Path) -> None:
    """A ridge folder whose skops file holds a forest (types a ridge never saves) is not loaded (saved
    without its arrays, as before they were, the skops file is what a load reads)."""
    X, y = sample_data(n=100, n_features=3)
    make_model("ridge").fit(X, y).save(tmp_path)
    skops_dump(make_model("random_forest", n_estimators=2, n_jobs=1).fit(X, y).estimator,  # type: ignore[attr-defined]
               tmp_path / "ridge.skops")
    _drop_file(tmp_path, "ridge.npz")
    with pytest.raises(ModelError, match=r"sklearn\.tree\._tree\.Tree.*refusing"):
        RidgeModel.load(tmp_path)


@pytest.mark.parametrize(("kind", "file"), [("random_forest", "forest.skops"), ("lightgbm", "booster.txt"),
                                            ("momentum", "state.json"), ("ridge", "ridge.skops")])
def test_truncated_changed_or_missing_files_are_refused_before_reading(kind: str, file: str, tmp_path: Path) -> None:
    """Checked against model.json's checksums first (LightGBM segfaults on a truncated model file)."""
    X, y = sample_data(n=100, n_features=3)
    make_model(kind).fit(X, y).save(tmp_path)
    path = tmp_path / file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=rf"{file}.*truncated"):
        load_model(tmp_path)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelError, match=rf"{file}.*changed"):
        load_model(tmp_path)
    path.unlink()
    with pytest.raises(ModelError, match=rf"{file} is missing"):
        load_model(tmp_path)


def test_damaged_files_with_matching_checksums_still_get_a_clear_error(tmp_path: Path) -> None:
    """A file damaged before save (checksums recomputed) is still refused by its own reader."""
    X, y = sample_data(n=100, n_features=3)
    for kind, file in (("random_forest", "trees.npz"), ("ridge", "ridge.npz"), ("momentum", "state.json")):
        make_model(kind).fit(X, y).save(tmp_path / kind)
        (tmp_path / kind / file).write_bytes(b"{garbage")
        info = json.loads((tmp_path / kind / "model.json").read_text())
        info["files"] = file_checksums(tmp_path / kind)
        (tmp_path / kind / "model.json").write_text(json.dumps(info))
        with pytest.raises(ModelError, match=file.replace(".", r"\.")):
            load_model(tmp_path / kind)


def _drop_file(directory: Path, name: str) -> None:
    """``name`` removed from a saved model, its checksums rewritten (a model saved by an older DOPE)."""
    (directory / name).unlink()
    info = json.loads((directory / "model.json").read_text())
    info["files"] = file_checksums(directory)
    (directory / "model.json").write_text(json.dumps(info))


SERVED_FROM_ARRAYS = (("random_forest", "trees.npz"), ("ridge", "ridge.npz"))


def test_a_model_service_serves_forests_and_ridges_without_importing_scikit_learn(tmp_path: Path) -> None:
    """A restart loads the arrays only (scikit-learn and skops cost ~1.8 s of it), with the same predictions."""
    X, y = sample_data(n=200, n_features=4)
    for kind, _ in SERVED_FROM_ARRAYS:
        model = make_model(kind).fit(X, y)
        model.save(tmp_path / kind)
        np.save(tmp_path / f"{kind}-expected.npy", model.predict_many(X))
    np.save(tmp_path / "X.npy", X)
    code = ("import sys, numpy as np; from pathlib import Path; from dope.models import load_model; "
            f"root = Path({str(tmp_path)!r}); X = np.load(root / 'X.npy'); "
            "same = [np.array_equal(load_model(root / k).predict_many(X), np.load(root / f'{k}-expected.npy')) "
            "for k in ('random_forest', 'ridge')]; "
            "print(same, 'sklearn' in sys.modules, 'skops' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["[True,", "True]", "False", "False"]


@pytest.mark.parametrize(("kind", "arrays"), SERVED_FROM_ARRAYS)
def test_models_saved_before_their_arrays_still_load_and_a_loaded_model_saves_again(
        kind: str, arrays: str, tmp_path: Path) -> None:
    X, y = sample_data(n=200, n_features=4)
    fitted = make_model(kind).fit(X, y)
    fitted.save(tmp_path / "new")
    fitted.save(tmp_path / "old")
    _drop_file(tmp_path / "old", arrays)
    expected = fitted.predict_many(X)
    np.testing.assert_array_equal(load_model(tmp_path / "old").predict_many(X), expected)
    load_model(tmp_path / "new").save(tmp_path / "again")  # its scikit-learn object is read when needed
    assert (tmp_path / "again" / arrays).is_file()
    np.testing.assert_array_equal(load_model(tmp_path / "again").predict_many(X), expected)
    _drop_file(tmp_path / "again", arrays)  # the skops file written from the lazily read object
    np.testing.assert_array_equal(load_model(tmp_path / "again").predict_many(X), expected)


def test_array_files_refuse_objects_and_missing_arrays(tmp_path: Path) -> None:
    from dope.models.base import load_arrays, save_arrays

    save_arrays(tmp_path / "a.npz", {"coef": np.ones(3)})
    with pytest.raises(ModelError, match=r"a\.npz lacks the arrays \['scale'\]"):
        load_arrays(tmp_path / "a.npz", ["coef", "scale"])
    np.savez(tmp_path / "b.npz", coef=np.array([object()], dtype=object))
    with pytest.raises(ModelError, match=r"b\.npz is not a readable array file"):
        load_arrays(tmp_path / "b.npz", ["coef"])


def test_momentum_fits_a_slope_through_the_origin_or_keeps_its_coefficient() -> None:
    X, y = sample_data(n=300, n_features=3)
    fitted = MomentumModel.from_params(column=1).fit(X, y)
    assert fitted.coef == pytest.approx(float(X[:, 1] @ y / (X[:, 1] @ X[:, 1])))
    persistence = MomentumModel.from_params(fit=False, coef=1.0).fit(X, y)
    np.testing.assert_array_equal(persistence.predict_many(X), X[:, 0])
    with pytest.raises(ModelError, match="column 5 is outside the 3 features"):
        MomentumModel.from_params(column=5).fit(X, y)


def test_ridge_matches_sklearn() -> None:
    X, y = sample_data(n=300, n_features=4)
    model = make_model("ridge", alpha=3.0).fit(X, y)
    np.testing.assert_allclose(model.predict_many(X), model.fitted_pipeline().predict(X), rtol=1e-12)  # type: ignore[attr-defined]


def test_importing_models_does_not_import_tensorflow() -> None:
    code = ("import sys, numpy as np; from dope.models import make_model; "
            "make_model('random_forest', n_estimators=2).fit(np.eye(4), np.ones(4)); "
            "make_model('lightgbm'); make_model('ridge'); print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
