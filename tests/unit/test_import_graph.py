"""The package map's arrows (docs/architecture.md), read from the source with ``ast``: live code never
imports the backtester, and domain packages never import the application-wide configuration."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "dope"

LIVE = ("trading", "services", "transport", "market", "rendezvous", "dashboard")
"""Packages that run in the live pipeline: none may import ``dope.backtest``."""

DOMAIN = ("trading", "rendezvous", "transport", "market", "features", "bars", "models")
"""Domain packages: each has its own small config types; ``dope.config`` composes them, not the reverse."""

def _module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = SRC) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (relative imports resolved).

    >>> sorted(m for m in imports_of(PACKAGE / "trading" / "strategy.py") if m.startswith("dope"))[:2]
    ['dope.trading.accounting', 'dope.trading.accounting.HOLD']
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from dope import config``
    return found


def _modules(packages: tuple[str, ...]) -> list[Path]:
    return sorted(p for name in packages for p in (PACKAGE / name).rglob("*.py"))


def _offenders(packages: tuple[str, ...], forbidden: str) -> list[str]:
    out = []
    for path in _modules(packages):
        hits = sorted(m for m in imports_of(path) if m == forbidden or m.startswith(forbidden + "."))
        if hits:
            out.append(f"{_module_name(path)} imports {', '.join(hits)}")
    return out


def test_the_scan_sees_every_live_and_domain_package() -> None:
    for name in {*LIVE, *DOMAIN}:
        assert _modules((name,)), f"no modules found under dope/{name}"


def test_no_live_code_imports_the_backtester() -> None:
    assert _offenders(LIVE, "dope.backtest") == []


def test_no_domain_module_imports_the_application_config() -> None:
    assert _offenders(DOMAIN, "dope.config") == []


def test_function_level_and_relative_imports_are_seen(tmp_path: Path) -> None:
    module = tmp_path / "dope" / "trading" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..backtest import config\n    import dope.config\n", encoding="utf-8")
    assert {"dope.backtest", "dope.backtest.config", "dope.config"} <= imports_of(module, root=tmp_path)


BASE = frozenset({"types", "errors", "timeparse", "clock", "fileio", "lazy", "logs", "memtrace", "messages",
                  "__version__"})
"""Modules with no dependency on any package of DOPE's: every package may import them."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    "bars": BASE,
    "store": BASE | {"bars"},
    "features": BASE | {"bars"},
    "models": BASE,
    "transport": BASE,
    "market": BASE | {"bars", "store"},
    "trading": BASE,
    "rendezvous": BASE | {"models", "store", "trading"},
    "training": BASE | {"bars", "features", "models", "store"},
    "plots": BASE,
    "backtest": BASE | {"plots", "trading"},
    "loop": BASE | {"bars", "features", "models", "rendezvous", "store", "trading", "training"},
    "config": BASE | {"bars", "loop", "market", "rendezvous", "trading", "transport"},
    "dashboard": BASE | {"bars", "config", "plots", "store", "transport"},
    "research": BASE | {"backtest", "bars", "config", "features", "models", "plots", "store", "training"},
    "plugins": BASE | {"features", "models"},
}
"""The package map of docs/architecture.md: what each package may import (``services`` and ``commands`` sit on
top and may import any package but each other's callers; ``cli`` imports only ``commands``, lazily)."""


def _package_imports(package: str) -> set[str]:
    paths = [SRC / "dope" / f"{package}.py"] if (SRC / "dope" / f"{package}.py").exists() else _modules((package,))
    found = {m.split(".")[1] for path in paths for m in imports_of(path) if m.startswith("dope.")}
    return found - {package}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_the_map_allows(package: str) -> None:
    assert _package_imports(package) - MAY_IMPORT[package] == set()


def test_services_never_import_the_commands_nor_the_backtester() -> None:
    assert _package_imports("services") & {"commands", "cli", "backtest"} == set()


def test_the_map_names_every_package() -> None:
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"}
    assert top - set(MAY_IMPORT) - BASE - {"services", "commands", "cli", "compile_notice"} == set()


def test_a_services_configuration_imports_no_heavy_library() -> None:
    """Every service imports ``dope.config`` first: pandas, numba and scipy there would cost each restart
    0.2-0.7 s. The packages it reads from give their other names on first use (``dope.lazy``)."""
    code = ("import sys, dope.config; heavy = [m for m in ('pandas', 'numba', 'scipy', 'sklearn') if m in sys.modules]; "
            "import dope.bars, dope.rendezvous, dope.trading; "
            "print(heavy, dope.bars.parse_interval('10s'), dope.rendezvous.Roles.__name__, dope.trading.HOLD)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    from dope.trading.accounting import HOLD

    assert out.stdout.split() == ["[]", "10000", "Roles", str(HOLD)]
    with pytest.raises(AttributeError, match="module 'dope.bars' has no attribute 'nope'"):
        import dope.bars

        dope.bars.nope  # noqa: B018
