"""The ``dope`` command: instant help (lazy imports), clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


NEGATIVE_VALUES = [
    ("optimize", "--lowers", "-0.002:0:5", "lowers", "-0.002:0:5"),
    ("optimize", "--lowers", "-0.002,-0.001,0", "lowers", "-0.002,-0.001,0"),
    ("optimize", "--uppers", "-0.001:0.002:4", "uppers", "-0.001:0.002:4"),
    ("optimize", "--uppers", "-.001,0.002", "uppers", "-.001,0.002"),
    ("backtest", "--lower", "-1e-4", "lower", -1e-4),
    ("backtest", "--upper", "-0.0005", "upper", -0.0005),
]
"""Every option that takes a threshold or a range of them, given a negative value after a space."""


@pytest.mark.parametrize(("command", "option", "text", "dest", "expected"), NEGATIVE_VALUES)
def test_negative_ranges_and_numbers_are_values_not_options(command: str, option: str, text: str, dest: str,
                                                            expected: object) -> None:
    from dope.cli import _command_parser

    parser, _ = _command_parser(command)
    args = parser.parse_args(["--symbol", "BTCUSDT", "--predictions", "p.parquet", option, text])
    assert getattr(args, dest) == expected


def test_an_unknown_option_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from dope.cli import _command_parser

    parser, _ = _command_parser("optimize")
    with pytest.raises(SystemExit):
        parser.parse_args(["--symbol", "BTCUSDT", "--predictions", "p.parquet", "--lowerz", "-1:0:2"])
    assert "unrecognized arguments: --lowerz" in capsys.readouterr().err
