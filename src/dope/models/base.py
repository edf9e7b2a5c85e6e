"""The model protocol every DOPE model follows, a shared base class, and the kind registry.

A model sees a feature matrix ``X`` (float64, ``(n, f)``, rows in time order) and predicts one number
per row: the prediction of row ``i`` uses rows ``i - lookback + 1 .. i`` only (the first ``lookback - 1``
are NaN). ``predict_one(window)`` with the last ``lookback`` rows equals the last value of
``predict_many``. ``save(directory)`` writes the model's files plus ``model.json`` (kind, params,
lookback, feature count, library versions, the sha256 of every file); :func:`load_model` dispatches on
that file, and every load checks those checksums before any file is deserialised (LightGBM, for one,
crashes the process on a truncated model file).

>>> import numpy as np
>>> model = make_model("zero").fit(np.ones((3, 2)), np.zeros(3))
>>> model.predict_one(np.ones((1, 2)))
0.0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from dope.types import FloatArray

P = TypeVar("P")
MODEL_FILE = "model.json"
FORMAT_VERSION = 1

# kind -> "module:Class"; modules are imported on demand (the LSTM pulls in TensorFlow).
_KINDS: dict[str, str] = {
    "random_forest": "dope.models.forest:RandomForestModel",
    "lstm": "dope.models.lstm:LstmModel",
    "lightgbm": "dope.models.gbm:LightGbmModel",
    "zero": "dope.models.baselines:ZeroModel",
    "momentum": "dope.models.baselines:MomentumModel",
    "ridge": "dope.models.baselines:RidgeModel",
    "online_ridge": "dope.models.online:OnlineRidgeModel",
}
MODEL_KINDS: tuple[str, ...] = tuple(_KINDS)


class ModelError(ValueError):
    """Bad input to a model (shape, NaN, unfitted) or an unreadable model folder; the message says what."""


@runtime_checkable
class Model(Protocol):
    """What the trainer, the registry and the model service rely on (public as ``dope.plugins.Model``).

    ``from_params(**params)`` builds an unfitted model; ``save`` writes ``model.json`` (see
    :func:`read_model_json`) beside the model's files. A model that learns online also has
    ``learn_one(x, y)`` (``dope.plugins.OnlineModel``).
    """

    kind: str
    params: Any  # a frozen dataclass of the kind's parameters
    lookback: int  # rows per prediction: 1 for tabular models
    n_features: int | None  # None until fitted

    @classmethod
    def from_params(cls, **params: Any) -> Self: ...

    def fit(self, X: FloatArray, y: FloatArray) -> Self: ...

    def predict_many(self, X: FloatArray) -> FloatArray: ...

    def predict_one(self, window: FloatArray) -> float: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...

    def metadata(self) -> dict[str, Any]: ...


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of numpy and of ``names`` (distribution names)."""
    return {name: importlib_metadata.version(name) for name in ("numpy", *names)}


def check_matrix(X: object, n_features: int | None = None, what: str = "X") -> FloatArray:
    """``X`` as a finite float64 ``(n, f)`` array (never a view the caller could see us change)."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ModelError(f"{what} must be 2-D (rows, features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ModelError(f"{what} has {arr.shape[1]} features, the model was fitted on {n_features}")
    _check_finite(arr, what)
    return arr


def check_target(y: object, n_rows: int) -> FloatArray:
    """``y`` as a finite float64 vector of ``n_rows``."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.shape != (n_rows,):
        raise ModelError(f"y must have shape ({n_rows},) to match X, got {arr.shape}")
    _check_finite(arr, "y")
    return arr


def _check_finite(arr: npt.NDArray[np.float64], what: str) -> None:
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ModelError(f"{what} holds a non-finite value (NaN or inf) at index {tuple(int(i) for i in bad)}")


class BaseModel(ABC, Generic[P]):
    """Input checks, ``model.json`` and metadata shared by every kind; subclasses fill the ``_`` hooks."""

    kind: str
    params_type: ClassVar[type]
    libraries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: P) -> None:
        self.params = params
        self.lookback = 1
        self.n_features: int | None = None

    @classmethod
    def from_params(cls, **params: Any) -> Self:
        """A new unfitted model; unknown parameter names raise :class:`ModelError`."""
        try:
            return cls(cls.params_type(**params))
        except TypeError as exc:
            raise ModelError(f"bad parameters for model kind {cls.kind!r}: {exc}") from exc

    def fit(self, X: FloatArray, y: FloatArray) -> Self:
        """Fit on rows in time order; ``y[i]`` is the target of row ``i``."""
        x = check_matrix(X)
        target = check_target(y, len(x))
        if len(x) < self.lookback:
            raise ModelError(f"{self.kind} needs at least {self.lookback} rows to fit, got {len(x)}")
        self._fit(x, target)
        self.n_features = x.shape[1]
        return self

    def predict_many(self, X: FloatArray) -> FloatArray:
        """One prediction per row (NaN for the first ``lookback - 1``)."""
        return self._predict_many(check_matrix(X, self._fitted_features()))

    def predict_one(self, window: FloatArray) -> float:
        """The prediction for the last row of ``window`` (``(lookback, f)``; ``(f,)`` when lookback is 1)."""
        arr = np.asarray(window, dtype=np.float64)
        if arr.ndim == 1 and self.lookback == 1:
            arr = arr.reshape(1, -1)
        arr = check_matrix(arr, self._fitted_features(), "window")
        if arr.shape[0] != self.lookback:
            raise ModelError(f"window must have {self.lookback} rows (the lookback), got {arr.shape[0]}")
        return self._predict_one(arr)

    def save(self, directory: Path) -> None:
        """Write the model's files and ``model.json`` into ``directory`` (created if needed)."""
        n_features = self._fitted_features()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_state(directory)
        info = {"format": FORMAT_VERSION, "kind": self.kind, "params": self.params_dict(),
                "lookback": self.lookback, "n_features": n_features, "libraries": self._library_versions(),
                "files": file_checksums(directory), "class": f"{type(self).__module__}:{type(self).__qualname__}"}
        (directory / MODEL_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """The model saved in ``directory`` (its ``model.json`` must name this kind)."""
        info = read_model_json(Path(directory))
        if info["kind"] != cls.kind:
            raise ModelError(f"{directory} holds a {info['kind']!r} model, not {cls.kind!r}")
        model = cls.from_params(**info["params"])
        model.n_features = int(info["n_features"])
        verify_checksums(Path(directory), info["files"])
        model._load_state(Path(directory))
        return model

    def metadata(self) -> dict[str, Any]:
        """Kind, params, lookback, feature count and library versions (JSON-ready)."""
        return {"kind": self.kind, "params": self.params_dict(), "lookback": self.lookback,
                "n_features": self.n_features, "libraries": self._library_versions()}

    def params_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict."""
        return dataclasses.asdict(self.params)  # type: ignore[call-overload, no-any-return]

    def _fitted_features(self) -> int:
        if self.n_features is None:
            raise ModelError(f"the {self.kind} model is not fitted yet: call fit() or load a saved one")
        return self.n_features

    def _library_versions(self) -> dict[str, str]:
        return library_versions(*self.libraries)

    def _predict_one(self, window: FloatArray) -> float:
        return float(self._predict_many(window)[-1])

    @abstractmethod
    def _fit(self, X: FloatArray, y: FloatArray) -> None: ...

    @abstractmethod
    def _predict_many(self, X: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _save_state(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_state(self, directory: Path) -> None: ...


def read_model_json(directory: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model, checked for the fields every loader needs."""
    path = Path(directory) / MODEL_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path} is missing: {directory} is not a saved DOPE model") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    missing = {"format", "kind", "params", "n_features", "files"} - set(info if isinstance(info, dict) else ())
    if missing:
        raise ModelError(f"{path} lacks the fields {sorted(missing)}")
    if info["format"] != FORMAT_VERSION:
        raise ModelError(f"{path} has format {info['format']!r}; this DOPE reads format {FORMAT_VERSION}")
    return dict(info)


def file_checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` but ``model.json``, by relative path."""
    return {path.relative_to(directory).as_posix(): _sha256(path) for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != MODEL_FILE}


def verify_checksums(directory: Path, expected: dict[str, str]) -> None:
    """Refuse a model whose files are missing, truncated or changed since ``save`` (checked before reading)."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path} is missing")
        if _sha256(path) != digest:
            raise ModelError(f"{path} does not match the checksum in {MODEL_FILE}: corrupted, truncated or changed")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def skops_dump(obj: object, path: Path) -> None:
    """Write a scikit-learn object with skops (a format that never runs code when read)."""
    import skops.io as sio

    sio.dump(obj, path)


def skops_load(path: Path, trusted: Sequence[str]) -> Any:
    """Read a skops file, refusing any type outside skops' defaults and ``trusted``."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except FileNotFoundError as exc:
        raise ModelError(f"{path} is missing") from exc
    except Exception as exc:  # skops raises many kinds of error on a damaged file
        raise ModelError(f"{path} is not a readable skops file: {exc}") from exc
    unexpected = untrusted - set(trusted)
    if unexpected:
        raise ModelError(f"{path} holds types this model never saves: {sorted(unexpected)}; refusing to load it")
    return sio.load(path, trusted=sorted(untrusted))


def save_arrays(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Write named arrays as an ``.npz`` (no pickled objects): what a service needs to serve a model,
    read back by :func:`load_arrays` without importing the library that fitted it."""
    with path.open("wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)


def load_arrays(path: Path, names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """The arrays ``names`` of an ``.npz`` written by :func:`save_arrays` (objects refused)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise ModelError(f"{path} lacks the arrays {missing}")
            return {n: data[n] for n in names}
    except (OSError, ValueError) as exc:  # a zip that is no zip, an object array, a truncated member
        raise ModelError(f"{path} is not a readable array file: {exc}") from exc


def model_class(kind: str, *, trusted: bool = True) -> type[BaseModel[Any]]:
    """The class of a model kind: built-in, installed entry point or ``module:Class`` (see
    :mod:`dope.models.kinds`; ``trusted=False`` refuses a ``module:Class`` that is not allowed)."""
    from dope.models.kinds import resolve_kind

    info = resolve_kind(kind, trusted=trusted)
    return checked_class(info.target, info.source, kind if info.source != "module" else None)


def checked_class(target: str, source: str, name: str | None) -> type[BaseModel[Any]]:
    """The model class ``target`` names, checked to follow the protocol (and to carry ``name`` as its kind)."""
    from dope.models.kinds import load_target

    cls = load_target(target)
    missing = [m for m in _CLASS_MEMBERS if not hasattr(cls, m)] if isinstance(cls, type) else ["a class"]
    if missing:
        raise ModelError(f"{target} ({source}) is not a DOPE model class: it lacks {', '.join(missing)}")
    if name is not None and cls.kind != name:
        raise ModelError(f"{target} ({source}) says its kind is {cls.kind!r}, registered as {name!r}")
    if name is None and cls.kind in _KINDS and _KINDS[cls.kind] != target:
        raise ModelError(f"{target} claims the built-in kind {cls.kind!r}; give it a kind of its own")
    checked: type[BaseModel[Any]] = cls
    return checked


_CLASS_MEMBERS: Final = ("kind", "from_params", "load", "fit", "predict_many", "predict_one", "save", "metadata")


def make_model(kind: str, **params: Any) -> BaseModel[Any]:
    """A new, unfitted model of ``kind`` (built-in, entry point or ``module:Class``) with ``params``."""
    return model_class(kind).from_params(**params)


def load_model(directory: Path) -> BaseModel[Any]:
    """The model saved in ``directory``, whatever its kind (an artifact cannot make us import a class
    that is neither built in, installed as an entry point, nor allowed: see :mod:`dope.models.kinds`)."""
    return saved_class(read_model_json(Path(directory))).load(Path(directory))


def saved_class(info: dict[str, Any]) -> type[BaseModel[Any]]:
    """The class a ``model.json`` names: its kind when built in or installed, else its ``class`` if allowed."""
    from dope.models.kinds import entry_point_kinds

    kind = str(info["kind"])
    if kind in _KINDS or kind in entry_point_kinds() or "class" not in info:
        return model_class(kind, trusted=False)
    cls = model_class(str(info["class"]), trusted=False)
    if cls.kind != kind:
        raise ModelError(f"model.json names kind {kind!r} but its class {info['class']} is {cls.kind!r}")
    return cls
