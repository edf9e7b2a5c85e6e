"""Feature sets: parameters, column names, warm-up and a version that changes with the definitions.

>>> fs = default_feature_set(10_000)
>>> fs.names[:3], fs.warmup, len(fs.version)
(('ret_1', 'ret_3', 'ret_6'), 121, 12)
>>> fs.version != default_feature_set(60_000).version
True
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import msgspec
import numpy as np

from dope.errors import UserError
from dope.features import definitions
from dope.features.definitions import N_SECTIONS
from dope.features.plugins import FeatureDefinition, plugin_features
from dope.types import DAY_MS, IntArray


class FeatureError(UserError, ValueError):
    """A feature set or its input is unusable; the message says what and where."""


class FeatureParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Windows and lags, in bars of ``interval_ms``; see ``docs/features.md`` for each feature."""

    interval_ms: int = 10_000
    return_lags: tuple[int, ...] = (1, 3, 6, 12, 30)
    vol_windows: tuple[int, ...] = (30, 120)
    range_windows: tuple[int, ...] = (1, 30)
    z_windows: tuple[int, ...] = (60,)
    flow_windows: tuple[int, ...] = (30, 120)
    ma_windows: tuple[int, ...] = (30, 120)
    rsi_windows: tuple[int, ...] = (14, 60)
    time_of_day: bool = True
    context_symbols: tuple[str, ...] = ()
    context_lags: tuple[int, ...] = (1, 6, 30)

    def sections(self) -> tuple[tuple[int, ...], ...]:
        """The windows/lags in the order the compiled step reads them."""
        return (self.return_lags, self.vol_windows, self.range_windows, self.z_windows,
                self.flow_windows, self.ma_windows, self.rsi_windows, self.context_lags)


_SECTION_NAMES: Final = ("return_lags", "vol_windows", "range_windows", "z_windows", "flow_windows",
                         "ma_windows", "rsi_windows", "context_lags")
_MIN_WINDOW: Final = {"vol_windows": 2, "z_windows": 2, "rsi_windows": 1}


def feature_names(p: FeatureParams) -> tuple[str, ...]:
    """Column names in the order :func:`definitions.fill_features` writes them."""
    names = [f"ret_{n}" for n in p.return_lags] + [f"vol_{n}" for n in p.vol_windows]
    names += [f"range_{n}" for n in p.range_windows] + [f"ma_dist_{n}" for n in p.ma_windows]
    names += [f"rsi_{n}" for n in p.rsi_windows]
    names += [name for n in p.z_windows for name in (f"volume_z_{n}", f"count_z_{n}")]
    names += [name for n in p.flow_windows for name in (f"taker_buy_{n}", f"vwap_dist_{n}")]
    names += ["tod_sin", "tod_cos"] if p.time_of_day else []
    names += [f"ctx_{s}_ret_{n}" for s in p.context_symbols for n in p.context_lags]
    return tuple(names)


def check_params(p: FeatureParams) -> None:
    """Refuse empty, too short or repeated windows, a bad interval or repeated context symbols."""
    if p.interval_ms <= 0:
        raise FeatureError(f"interval_ms must be positive, got {p.interval_ms}")
    for name, values in zip(_SECTION_NAMES, p.sections(), strict=True):
        low = _MIN_WINDOW.get(name, 1)
        if any(v < low for v in values) or len(set(values)) != len(values):
            raise FeatureError(f"{name} must be distinct integers >= {low}, got {values}")
    if len(set(p.context_symbols)) != len(p.context_symbols) or not all(p.context_symbols):
        raise FeatureError(f"context_symbols must be distinct non-empty names, got {p.context_symbols}")
    if p.context_symbols and not p.context_lags:
        raise FeatureError("context_symbols given without context_lags")
    if not feature_names(p):
        raise FeatureError("the feature set has no feature")


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned set of features: what every feature vector and every model carries."""

    name: str
    params: FeatureParams
    plugins: tuple[FeatureDefinition, ...] = ()
    """Plugin features (:mod:`dope.features.plugins`), computed after the built-in ones."""

    def __post_init__(self) -> None:
        check_params(self.params)
        clash = set(feature_names(self.params)) & {f.name for f in self.plugins}
        if clash or len({f.name for f in self.plugins}) != len(self.plugins):
            raise FeatureError(f"plugin feature names repeat or clash with built-in ones: {sorted(clash)}")

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Feature column names, in order: the built-in ones, then the plugin features."""
        return feature_names(self.params) + tuple(f.name for f in self.plugins)

    @cached_property
    def n_builtin(self) -> int:
        """How many of :attr:`names` the compiled step writes (the rest are plugin features)."""
        return len(self.names) - len(self.plugins)

    @cached_property
    def warmup(self) -> int:
        """Bars needed before the first vector: the longest window or lag plus one, or a plugin's window."""
        builtin = 1 + max(v for values in self.params.sections() for v in values)
        return max([builtin, *(f.window for f in self.plugins)])

    @property
    def context_symbols(self) -> tuple[str, ...]:
        """Symbols whose bars (same open time) feed the context features."""
        return self.params.context_symbols

    @cached_property
    def version(self) -> str:
        """Short sha256 of the definitions' source, the naming code, the name and the parameters."""
        digest = hashlib.sha256(inspect.getsource(definitions).encode())
        digest.update(inspect.getsource(feature_names).encode())
        digest.update(self.name.encode() + b"\0" + msgspec.json.encode(self.params))
        for feature in self.plugins:
            digest.update(feature.fingerprint.encode())
        return digest.hexdigest()[:12]

    @cached_property
    def spec(self) -> IntArray:
        """The parameters packed for the compiled step (see ``definitions.SP_*``)."""
        sections = self.params.sections()
        head = [self.params.interval_ms, self.warmup, int(self.params.time_of_day),
                len(self.params.context_symbols)]
        lengths = [len(values) for values in sections]
        assert len(lengths) == N_SECTIONS
        return np.array(head + lengths + [v for values in sections for v in values], dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """Name, version, parameters, names (and plugin features, if any) as plain data (for metadata files)."""
        described = {"name": self.name, "version": self.version, "params": msgspec.to_builtins(self.params),
                     "names": list(self.names), "warmup": self.warmup}
        return described | ({"plugins": [f.name for f in self.plugins]} if self.plugins else {})


def default_feature_set(interval_ms: int = 10_000, context_symbols: tuple[str, ...] = (), *,
                        name: str = "default", plugins: Sequence[str] | None = None,
                        **overrides: Any) -> FeatureSet:
    """The default set for bars of ``interval_ms`` (10 s and coarser); windows are in bars.

    Time of day is left out for daily and coarser bars, where it would be constant.
    ``plugins`` names the plugin features to add (None: every installed one, ``()``: none).
    ``overrides`` replace any other :class:`FeatureParams` field.
    """
    fields: dict[str, Any] = {"time_of_day": interval_ms < DAY_MS, **overrides}
    params = FeatureParams(interval_ms=interval_ms, context_symbols=tuple(context_symbols), **fields)
    return FeatureSet(name, params, plugin_features(plugins))
