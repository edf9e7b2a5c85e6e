"""Model kinds: the one resolver every place that turns a kind name into a class calls.

A kind is one of

* a built-in name (``ridge``, ``random_forest`` ... the table in :mod:`dope.models.base`);
* the name of an installed entry point in the group ``dope.models`` (a plugin package);
* a ``module:Class`` string (``mypkg.models:MyModel``).

Naming a kind yourself (``dope train KIND``, ``[[models.deploy]]``, ``[loop] kinds``, ``make_model``)
trusts it: a ``module:Class`` is imported. Loading an *artifact* does not: a ``model.json`` naming a
class that is neither built in nor an installed entry point is refused, never imported, unless it is
on the allow-list (``DOPE_ALLOW_MODELS``, comma-separated ``module:Class`` strings, or a kind this
process already named itself). See ``docs/plugins.md``.

>>> resolve_kind("ridge").source
'built-in'
>>> resolve_kind("nosuchkind")
Traceback (most recent call last):
...
dope.models.base.ModelError: unknown model kind 'nosuchkind'; known kinds: ...
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Final

MODELS_GROUP: Final = "dope.models"
FEATURES_GROUP: Final = "dope.features"
ALLOW_ENV: Final = "DOPE_ALLOW_MODELS"

_allowed: set[str] = set()


@dataclass(frozen=True)
class KindInfo:
    """Where a kind comes from: ``source`` is ``built-in``, ``entry point <dist> <version>`` or ``module``."""

    name: str
    target: str  # "module:Class"
    source: str


def is_class_path(kind: str) -> bool:
    """Whether ``kind`` reads as ``module:Class``."""
    module, sep, name = kind.partition(":")
    return bool(sep) and all(part.isidentifier() for part in (*module.split("."), *name.split(".")))


def allow(kind: str) -> None:
    """Trust ``kind`` (a ``module:Class``) for artifact loads in this process."""
    _allowed.add(kind)


def allowed_classes() -> frozenset[str]:
    """The ``module:Class`` strings artifacts may name: ``DOPE_ALLOW_MODELS`` plus :func:`allow`'s."""
    from_env = {item.strip() for item in os.environ.get(ALLOW_ENV, "").split(",") if item.strip()}
    return frozenset(from_env | _allowed)


@lru_cache(maxsize=1)
def entry_point_kinds() -> dict[str, KindInfo]:
    """The installed ``dope.models`` entry points, by name (read once per process)."""
    found: dict[str, KindInfo] = {}
    for ep in metadata.entry_points(group=MODELS_GROUP):
        dist = ep.dist
        origin = f"entry point {dist.name} {dist.version}" if dist is not None else "entry point"
        found[ep.name] = KindInfo(ep.name, ep.value, origin)
    return found


def known_kinds() -> list[KindInfo]:
    """Built-in kinds, then installed entry points, then allowed ``module:Class`` strings."""
    from dope.models.base import _KINDS

    found = [KindInfo(name, target, "built-in") for name, target in _KINDS.items()]
    found += [info for name, info in sorted(entry_point_kinds().items()) if name not in _KINDS]
    found += [KindInfo(name, name, f"module (allowed by {ALLOW_ENV} or named in this process)")
              for name in sorted(allowed_classes())]
    return found


def resolve_kind(kind: str, *, trusted: bool = True) -> KindInfo:
    """Where ``kind`` lives; an unknown kind, or an untrusted ``module:Class`` not allowed, raises ``ModelError``."""
    from dope.models.base import _KINDS, ModelError

    if kind in _KINDS:
        return KindInfo(kind, _KINDS[kind], "built-in")
    if kind in entry_point_kinds():
        return entry_point_kinds()[kind]
    if is_class_path(kind):
        if trusted:
            allow(kind)
        elif kind not in allowed_classes():
            raise ModelError(f"model class {kind!r} is neither built in nor an installed {MODELS_GROUP} entry "
                             f"point, and not allowed: refusing to import it (install it as a plugin, or "
                             f"add it to {ALLOW_ENV} if you trust it)")
        return KindInfo(kind, kind, "module")
    names = ", ".join(info.name for info in known_kinds())
    raise ModelError(f"unknown model kind {kind!r}; known kinds: {names} (or a module:Class string)")


def load_target(target: str) -> Any:
    """The object a ``module:Class`` string names (the module imported on first use)."""
    from dope.models.base import ModelError

    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot load {target!r}: {exc}") from exc
    return found


def class_path(cls: type) -> str:
    """``module:Class`` of ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def allow_env(named: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{ALLOW_ENV: ...}`` for child processes: the inherited list plus the ``module:Class`` kinds in ``named``
    (the configuration's ``[loop] kinds`` and ``[supervisor] bootstrap``: named there, so trusted)."""
    inherited = (os.environ if environ is None else environ).get(ALLOW_ENV, "")
    items = [item.strip() for item in inherited.split(",") if item.strip()]
    items += [kind for kind in named if is_class_path(kind) and kind not in items]
    return {ALLOW_ENV: ",".join(items)} if items else {}
