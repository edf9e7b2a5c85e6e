"""The model registry: versioned, checksummed model artifacts on disk, and the roles they play.

Layout under the registry root (default ``var/registry``, ``[registry] path``)::

    <root>/<model_id>/metadata.json     what the model is, what it was trained on, checksums
    <root>/<model_id>/model/...          the files the model's own ``save`` wrote (skops, LightGBM text, .keras)
    <root>/<model_id>/reference.npz      the reference sample for drift monitors (``reference``), if saved
    <root>/roles.json                    {"revision": n, "updated_ms": t, "roles": {model_id: role}}

A model id reads ``<kind>-<UTC yyyymmddThhmm>-<first 6 hex of the artifact checksum>``.
``metadata.json`` lists the sha256 and size of every model file, a checksum of the whole
artifact (over that listing) and a checksum of the metadata itself. ``load`` verifies all of
them *before* anything is deserialised, then the feature-set version, so a corrupted,
truncated, foreign or tampered artifact is refused with a ``RegistryError`` that names the
file, and a model asked to read features of another version raises ``FeatureVersionError``.

An artifact is written into ``<root>/.staging-<host>-<pid>-<uuid>`` and renamed into place
whole, so a writer killed mid-way leaves only a staging folder, which no reader lists and
:meth:`Registry.clean_staging` removes once its writer is gone.

``roles.json`` is replaced atomically (temporary file, fsync, rename) and carries a
``revision`` that grows on every change, so a live service can watch it and switch models.

>>> import tempfile
>>> registry = Registry(tempfile.mkdtemp())
>>> registry.list()
[]
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast, get_args

import numpy as np
import numpy.typing as npt

from dope.clock import Clock, LiveClock
from dope.errors import UserError
from dope.fileio import atomic_write_json, exclusive_lock, fsync_folder

FORMAT: Final = "dope-model-artifact"
FORMAT_VERSION: Final = 1
METADATA_FILE: Final = "metadata.json"
MODEL_DIR: Final = "model"
REFERENCE_FILE: Final = "reference.npz"
STAGING_PREFIX: Final = ".staging-"
STALE_STAGING_S: Final = 6 * 3600.0
"""Age after which a staging folder is removed even when its writer cannot be checked (another host)."""
ROLES_FILE: Final = "roles.json"
Role = Literal["champion", "challenger", "shadow", "canary", "retired"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
UNIQUE_ROLES: Final = frozenset({"champion"})
"""Roles at most one model holds; promoting another champion makes the old one a challenger."""
_LIBRARIES: Final[dict[str, tuple[str, ...]]] = {
    "random_forest": ("scikit-learn", "skops", "numba"),
    "ridge": ("scikit-learn", "skops"),
    "lightgbm": ("lightgbm",),
    "lstm": ("tensorflow", "keras", "numba"),
}


class RegistryError(UserError, ValueError):
    """An artifact cannot be used (unknown id, corrupt, truncated, foreign or tampered); the message says why."""


class FeatureVersionError(RegistryError):
    """The model was trained on another version of its feature set than the one offered."""


@dataclass(frozen=True, eq=False)
class Reference:
    """A model's reference sample: the last training feature vectors and its in-sample predictions on them.

    ``features`` is ``(n, k)`` float64 with columns ``feature_names``; ``predictions`` is ``(n,)``.
    Drift monitors compare live vectors and predictions with it.
    """

    feature_names: tuple[str, ...]
    features: npt.NDArray[np.float64]
    predictions: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n_rows, n_features = self.features.shape if self.features.ndim == 2 else (-1, -1)
        if n_features != len(self.feature_names) or self.predictions.shape != (n_rows,):
            raise ValueError(f"reference sample: features {self.features.shape}, predictions "
                             f"{self.predictions.shape} and {len(self.feature_names)} names do not agree")


class SavableModel(Protocol):
    """What the registry needs of a model (a subset of ``dope.models.Model``)."""

    kind: str
    lookback: int

    def save(self, directory: Path) -> None: ...

    def metadata(self) -> dict[str, Any]: ...


class FeatureSetLike(Protocol):
    """What the registry records of a feature set (a subset of ``dope.features.FeatureSet``)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def names(self) -> tuple[str, ...]: ...


class Registry:
    """Versioned model artifacts under ``root``.

    ``clock`` stamps creation times (tests pass a simulated one); ``loader`` reads a saved model
    folder (default ``dope.models.load_model``, which dispatches on the model's ``model.json``).
    """

    def __init__(self, root: str | Path, clock: Clock | None = None,
                 loader: Callable[[Path], Any] | None = None) -> None:
        self.root = Path(root)
        self._clock: Clock = clock or LiveClock()
        self._loader = loader

    # ---- registering ---------------------------------------------------------------------------
    def register(self, model: SavableModel, *, feature_set: FeatureSetLike, symbol: str, interval_ms: int,
                 train_start_ms: int, train_end_ms: int, metrics: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, reference: Reference | None = None) -> str:
        """Save ``model`` as a new artifact and return its id.

        ``train_start_ms``/``train_end_ms`` bound (end exclusive) the bars the model saw,
        labels included; ``dope predict`` refuses to report predictions inside that range.
        ``extra`` adds top-level metadata keys (``lineage``, ``horizon``); ``reference`` is saved
        as ``reference.npz``, listed and checksummed like the model's files.
        """
        if train_end_ms <= train_start_ms:
            raise RegistryError(f"empty training range [{train_start_ms}, {train_end_ms})")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            model.save(staging / MODEL_DIR)
            if reference is not None:
                _save_reference(staging / REFERENCE_FILE, reference)
            files = _file_listing(staging)
            created = self._clock.now_ms()
            model_id = self._new_id(model.kind, created, _artifact_sha(files))
            meta = _metadata(model, model_id, created, files, feature_set, symbol, interval_ms,
                             (train_start_ms, train_end_ms), dict(metrics or {}), dict(extra or {}))
            atomic_write_json(staging / METADATA_FILE, meta, indent=2)
            os.replace(staging, self.root / model_id)
            fsync_folder(self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return model_id

    def clean_staging(self, stale_after_s: float = STALE_STAGING_S) -> list[str]:
        """Remove staging folders left by killed writers; return their names.

        A folder is left behind when its writer (on this host) no longer runs, or when it is older
        than ``stale_after_s`` (a writer on another host, or a reused pid).
        """
        removed = []
        for folder in sorted(self.root.glob(f"{STAGING_PREFIX}*")):
            if folder.is_dir() and _abandoned(folder, stale_after_s):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed

    def _new_id(self, kind: str, created_ms: int, artifact_sha: str) -> str:
        stamp = datetime.fromtimestamp(created_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M")
        base = f"{kind}-{stamp}-{artifact_sha[:6]}"
        model_id, n = base, 1
        while (self.root / model_id).exists():
            n += 1
            model_id = f"{base}-{n}"
        return model_id

    # ---- reading -------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Metadata of every artifact (unverified; see ``verify``), oldest first, with its ``role``."""
        roles = self.roles()
        found = []
        for folder in sorted(p for p in self.root.glob("[!.]*") if (p / METADATA_FILE).is_file()):
            try:
                meta = _read_metadata(folder)
            except RegistryError as exc:
                meta = {"model_id": folder.name, "error": str(exc)}
            meta["role"] = roles.get(folder.name, "")
            found.append(meta)
        return sorted(found, key=lambda m: (m.get("created_ms", 0), m["model_id"]))

    def show(self, model_id: str) -> dict[str, Any]:
        """Metadata of one artifact (checksums verified), with its ``role``."""
        meta = self.verify(model_id)
        meta["role"] = self.roles().get(model_id, "")
        return meta

    def verify(self, model_id: str) -> dict[str, Any]:
        """Check an artifact's metadata and every file's checksum without deserialising; return the metadata."""
        folder = self.path_of(model_id)
        meta = _read_metadata(folder)
        if meta.get("model_id") != model_id:
            raise RegistryError(f"foreign artifact in {folder}: its metadata.json describes "
                                f"{meta.get('model_id')!r}, not {model_id!r}")
        _check_files(folder, meta)
        return meta

    def load(self, model_id: str, feature_version: str | None = None) -> tuple[Any, dict[str, Any]]:
        """``(model, metadata)`` after verifying checksums and, when given, the feature-set version."""
        meta = self.verify(model_id)
        check_feature_version(meta, feature_version)
        try:
            model = self._load_files(self.path_of(model_id) / MODEL_DIR)
        except (ValueError, OSError, KeyError) as exc:
            raise RegistryError(f"artifact {model_id} passed its checksums but cannot be loaded: {exc}") from None
        if model.kind != meta["kind"]:
            raise RegistryError(f"foreign artifact {model_id}: metadata says {meta['kind']}, files hold {model.kind}")
        return model, meta

    def reference(self, model_id: str) -> Reference:
        """The reference sample saved with ``model_id`` (checksums verified first)."""
        meta = self.verify(model_id)
        path = self.path_of(model_id) / REFERENCE_FILE
        if REFERENCE_FILE not in meta["files"]:
            raise RegistryError(f"model {model_id} has no reference sample ({path} was not saved with it: "
                                "registered before reference samples, or with none); retrain it to get one")
        return _load_reference(path)

    def _load_files(self, directory: Path) -> Any:
        if self._loader is not None:
            return self._loader(directory)
        from dope.models import load_model

        return load_model(directory)

    def path_of(self, model_id: str) -> Path:
        """Folder of an artifact; ``RegistryError`` if there is none."""
        if not model_id or "/" in model_id or model_id.startswith("."):
            raise RegistryError(f"bad model id {model_id!r}")
        folder = self.root / model_id
        if not folder.is_dir():
            raise RegistryError(f"no model {model_id!r} in registry {self.root} ({len(self.list())} models there; "
                                "see `dope models list`)")
        return folder

    # ---- roles ---------------------------------------------------------------------------------
    def roles(self) -> dict[str, str]:
        """``{model_id: role}`` of every model that has one."""
        return dict(self._read_roles()["roles"])

    def revision(self) -> int:
        """How many times the roles changed (0 before the first change)."""
        return int(self._read_roles()["revision"])

    def champion(self) -> str | None:
        """The id of the champion, if any."""
        return next((mid for mid, role in self.roles().items() if role == "champion"), None)

    def promote(self, model_id: str, role: str = "champion") -> dict[str, str]:
        """Give ``model_id`` a role (verifying its artifact first); return the new roles."""
        if role not in ROLES:
            raise RegistryError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        self.verify(model_id)
        with self._roles_lock():
            state = self._read_roles()
            roles: dict[str, str] = dict(state["roles"])
            if role in UNIQUE_ROLES:
                roles = {mid: ("challenger" if r == role else r) for mid, r in roles.items()}
            roles[model_id] = role
            self._write_roles(state, roles)
        return roles

    def retire(self, model_id: str) -> dict[str, str]:
        """Mark ``model_id`` retired (it stays on disk); return the new roles."""
        self.path_of(model_id)
        with self._roles_lock():
            state = self._read_roles()
            roles = {**state["roles"], model_id: "retired"}
            self._write_roles(state, roles)
        return roles

    def _read_roles(self) -> dict[str, Any]:
        path = self.root / ROLES_FILE
        if not path.exists():
            return {"revision": 0, "updated_ms": 0, "roles": {}}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state.get("roles"), dict):
                raise ValueError("no 'roles' mapping")
            return cast(dict[str, Any], state)
        except (ValueError, AttributeError) as exc:
            raise RegistryError(f"{path} is not a valid roles file: {exc}") from None

    def _write_roles(self, state: Mapping[str, Any], roles: Mapping[str, str]) -> None:
        new = {"revision": int(state["revision"]) + 1, "updated_ms": self._clock.now_ms(), "roles": dict(roles)}
        atomic_write_json(self.root / ROLES_FILE, new, indent=2)

    def _roles_lock(self) -> AbstractContextManager[None]:
        return exclusive_lock(self.root / ".roles.lock")


# ---- checks --------------------------------------------------------------------------------------

def check_feature_version(meta: Mapping[str, Any], feature_version: str | None) -> None:
    """Raise ``FeatureVersionError`` if ``feature_version`` is given and is not the model's."""
    expected = meta["feature_set"]["version"]
    if feature_version is not None and feature_version != expected:
        raise FeatureVersionError(
            f"model {meta['model_id']} was trained on feature set {meta['feature_set']['name']!r} version "
            f"{expected}, but the features offered are version {feature_version}: retrain the model or use "
            "the feature definition it was trained with")


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.is_file():
        raise RegistryError(f"foreign artifact {folder}: no {METADATA_FILE}")
    try:
        meta = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} is corrupt or truncated (not valid JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RegistryError(f"foreign artifact {folder}: {METADATA_FILE} is not a DOPE model artifact")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RegistryError(f"{path}: artifact format version {meta.get('format_version')} is not "
                            f"{FORMAT_VERSION}, which this DOPE reads")
    if meta.get("metadata_sha256") != _metadata_sha(meta):
        raise RegistryError(f"{path} was modified after registration (its checksum does not match)")
    return cast(dict[str, Any], meta)


def _check_files(folder: Path, meta: Mapping[str, Any]) -> None:
    listed: dict[str, dict[str, Any]] = meta["files"]
    if _artifact_sha(listed) != meta["artifact_sha256"]:
        raise RegistryError(f"{folder}: the file listing does not match the artifact checksum")
    present = set(_artifact_files(folder))
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise RegistryError(f"foreign file(s) in artifact {folder}: {', '.join(unlisted)} (not in its metadata)")
    for name, expected in sorted(listed.items()):
        _check_file(folder / name, expected)


def _check_file(path: Path, expected: Mapping[str, Any]) -> None:
    if not path.is_file():
        raise RegistryError(f"artifact file missing: {path}")
    size = path.stat().st_size
    if size != expected["size"]:
        raise RegistryError(f"artifact file {path} is truncated or altered: {size} bytes, "
                            f"expected {expected['size']}")
    if _sha256(path) != expected["sha256"]:
        raise RegistryError(f"artifact file {path} is corrupt: its sha256 does not match the metadata")


# ---- metadata ------------------------------------------------------------------------------------

def trained_until_ms(meta: Mapping[str, Any]) -> int:
    """End (exclusive, epoch ms) of the bars a registered model was fitted on.

    Every bar opening before it is in sample for the model, whatever its symbol: a model fitted on
    BTCUSDT in January has seen January, so its ETHUSDT forecasts for January are concurrent, not
    out of sample.
    """
    return int(meta["data"]["train_end_ms"])


def _metadata(model: SavableModel, model_id: str, created_ms: int, files: dict[str, dict[str, Any]],
              feature_set: FeatureSetLike, symbol: str, interval_ms: int, train_range: tuple[int, int],
              metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    model_meta = model.metadata()
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_id": model_id, "kind": model.kind,
        "params": model_meta.get("params", {}), "lookback": int(model.lookback), "model": model_meta,
        "feature_set": _describe(feature_set),
        "data": {"symbol": symbol, "interval_ms": interval_ms, "train_start_ms": train_range[0],
                 "train_end_ms": train_range[1], "train_start": _iso(train_range[0]),
                 "train_end": _iso(train_range[1])},
        "metrics": metrics, "libraries": library_versions(model.kind, _plugin_libraries(model)), "created_ms": created_ms,
        "created": _iso(created_ms), "files": files, "artifact_sha256": _artifact_sha(files),
        "learns_online": callable(getattr(model, "learn_one", None)), **extra,
    }
    meta = cast(dict[str, Any], _finite(json.loads(json.dumps(meta, default=_jsonable))))
    meta["metadata_sha256"] = _metadata_sha(meta)
    return meta


def _describe(feature_set: FeatureSetLike) -> dict[str, Any]:
    """Name, version and names of a feature set, plus its parameters when it can describe itself."""
    described = getattr(feature_set, "describe", None)
    base = dict(described()) if callable(described) else {}
    return {**base, "name": feature_set.name, "version": feature_set.version, "names": list(feature_set.names)}


def library_versions(kind: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python, DOPE, numpy and the libraries a model of ``kind`` is built on (and ``extra``)."""
    versions = {"python": platform.python_version()}
    for name in dict.fromkeys(("dope", "numpy", *_LIBRARIES.get(kind, ()), *extra)):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _plugin_libraries(model: Any) -> tuple[str, ...]:
    """A plugin model's own distribution and its declared ``libraries`` (none for DOPE's own classes)."""
    top = type(model).__module__.split(".")[0]
    if top == "dope":
        return ()
    owners = importlib.metadata.packages_distributions().get(top, [])
    return (*owners, *getattr(model, "libraries", ()))


def _artifact_files(folder: Path) -> list[str]:
    """Every file of an artifact but its metadata, relative to its folder."""
    files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return sorted(str(p) for p in files if str(p) != METADATA_FILE)


def _file_listing(folder: Path) -> dict[str, dict[str, Any]]:
    if not any((folder / MODEL_DIR).rglob("*")):
        raise RegistryError(f"the model wrote no files into {folder / MODEL_DIR}")
    paths = [folder / name for name in _artifact_files(folder)]
    return {str(p.relative_to(folder)): {"sha256": _sha256(p), "size": p.stat().st_size} for p in paths}


def _abandoned(staging: Path, stale_after_s: float) -> bool:
    """Whether a staging folder's writer is gone (same host, pid not running) or it is stale."""
    try:
        age = time.time() - staging.stat().st_mtime
    except FileNotFoundError:
        return False
    host, _, rest = staging.name[len(STAGING_PREFIX):].rpartition("-")[0].rpartition("-")
    if age > stale_after_s:
        return True
    if host != socket.gethostname() or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _save_reference(path: Path, reference: Reference) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, feature_names=np.array(reference.feature_names, dtype=np.str_),
                 features=np.ascontiguousarray(reference.features, dtype=np.float64),
                 predictions=np.ascontiguousarray(reference.predictions, dtype=np.float64))


def _load_reference(path: Path) -> Reference:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(name) for name in data["feature_names"])
            return Reference(names, np.asarray(data["features"], dtype=np.float64),
                             np.asarray(data["predictions"], dtype=np.float64))
    except (OSError, ValueError, KeyError) as exc:
        raise RegistryError(f"reference sample {path} cannot be read: {exc}") from None


def _artifact_sha(files: Mapping[str, Mapping[str, Any]]) -> str:
    text = "".join(f"{name}\0{entry['sha256']}\0{entry['size']}\n" for name, entry in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _metadata_sha(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """numpy scalars, msgspec structs and the like as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "__struct_fields__"):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
