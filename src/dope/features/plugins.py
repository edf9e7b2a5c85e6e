"""Features from plugin packages (entry point group ``dope.features``), run in both paths.

A plugin feature is a :class:`FeatureDefinition`: a name, the number of bars it reads (``window``),
a ``version`` and a compiled function ``function(w) -> float`` of the chronological history window
``w`` (rows: the ring channels ``CH_LOG_CLOSE``, ``CH_CLOSE``, ``CH_RANGE`` ... of
:mod:`dope.features.definitions`; columns: the last ``window`` bars, newest last). After the built-in
step has filled a ready vector, :func:`fill_plugin_features` evaluates each plugin feature on the same
ring, in the online featurizer and in the offline loop alike, so both compute the same numbers.

A feature set includes every installed plugin feature by default; their names, versions and source
join the feature-set version, so a model trained with a plugin feature is refused by a featurizer
without it (and the other way round).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any, Final

from dope.features import definitions as d
from dope.types import FloatArray, IntArray

FEATURES_GROUP: Final = "dope.features"


@dataclass(frozen=True, eq=False)
class FeatureDefinition:
    """One plugin feature: ``function(w)`` on the last ``window`` bars of every ring channel."""

    name: str
    window: int
    function: Callable[[FloatArray], float]
    version: str = "1"
    source: str = ""  # set on discovery: "entry point <dist> <version>"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"plugin feature name must be an identifier, got {self.name!r}")
        if self.window < 1:
            raise ValueError(f"plugin feature {self.name}: window must be >= 1 bar, got {self.window}")

    @property
    def fingerprint(self) -> str:
        """sha256 of the name, window, version and the function's source (what the feature version hashes)."""
        function = getattr(self.function, "py_func", self.function)
        try:
            code = inspect.getsource(function)
        except (OSError, TypeError):
            code = getattr(function, "__qualname__", repr(function))
        text = f"{self.name}\0{self.window}\0{self.version}\0{code}"
        return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def installed_features() -> dict[str, FeatureDefinition]:
    """The ``dope.features`` entry points, loaded and checked, by feature name (read once per process)."""
    from dope.features.featureset import FeatureError

    found: dict[str, FeatureDefinition] = {}
    for ep in metadata.entry_points(group=FEATURES_GROUP):
        obj: Any = ep.load()
        if not isinstance(obj, FeatureDefinition):
            raise FeatureError(f"entry point {ep.name} = {ep.value} ({FEATURES_GROUP}) is a "
                               f"{type(obj).__name__}, not a dope.plugins.FeatureDefinition")
        dist = ep.dist
        origin = f"entry point {dist.name} {dist.version}" if dist is not None else "entry point"
        found[obj.name] = FeatureDefinition(obj.name, obj.window, obj.function, obj.version, origin)
    return found


def plugin_features(names: Iterable[str] | None = None) -> tuple[FeatureDefinition, ...]:
    """Installed plugin features named ``names`` (None: all, sorted by name); a missing one raises."""
    from dope.features.featureset import FeatureError

    installed = installed_features()
    if names is None:
        return tuple(installed[name] for name in sorted(installed))
    missing = [name for name in names if name not in installed]
    if missing:
        raise FeatureError(f"plugin features {missing} are not installed (installed: {sorted(installed) or 'none'})")
    return tuple(installed[name] for name in names)


def fill_plugin_features(plugins: Sequence[FeatureDefinition], ring: FloatArray, state: IntArray,
                         warmup: int, out: FloatArray, first: int) -> None:
    """Write each plugin feature of the bar just stepped into ``out[first:]`` (ready vectors only)."""
    pos = int(state[d.ST_POS])
    for j, feature in enumerate(plugins):
        out[first + j] = feature.function(ring[:, pos + warmup - feature.window:pos + warmup])
