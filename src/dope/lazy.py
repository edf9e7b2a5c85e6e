"""Package names that load on first use (PEP 562), so importing one light submodule stays light.

A service's start imports ``dope.config``, which reads a few small modules of packages whose
``__init__`` would otherwise pull pandas, numba and scipy in (about 0.5 s of every restart)::

    __getattr__ = lazy_exports(__name__, {"Rendezvous": "policy", "Roles": "roles"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving each name of ``homes`` from its submodule (``name -> submodule``)."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home}"), name)

    return __getattr__
