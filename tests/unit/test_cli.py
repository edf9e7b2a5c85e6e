"""The ``dope`` command: instant help (lazy imports), clear errors."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["numpy", "pandas", "zmq", "duckdb", "pyarrow", "numba", "aiohttp"]


def dope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dope.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_lists_commands_without_importing_heavy_packages() -> None:
    probe = ("import sys, runpy; sys.argv = ['dope', '--help'];\n"
             "try:\n    runpy.run_module('dope.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout
    assert "collect" in out and "ingest" in out and "bars" in out
    assert "LOADED []" in out


def test_unknown_command_fails() -> None:
    assert dope("frobnicate").returncode == 2


def test_config_error_is_one_clear_line() -> None:
    result = dope("config", env={"DOPE_BARS__INTERVAL": "7x", "PATH": "/usr/bin"})
    assert result.returncode == 2
    assert result.stderr.startswith("dope: error: invalid configuration")
    assert "Traceback" not in result.stderr


def test_config_prints_effective_values() -> None:
    result = dope("config", env={"DOPE_BARS__INTERVAL": "1m", "PATH": "/usr/bin"})
    assert result.returncode == 0
    assert 'interval = "1m"' in result.stdout
