"""Configuration: TOML, environment overrides, errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dope.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dope.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid() -> None:
    config = load_config(None, environ={})
    assert config.bars.interval_ms == 10_000
    assert config.bus.publish.startswith("tcp://127.0.0.1:")


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[collector]\nsource = "synthetic"\nsymbols = ["SOLUSDT"]\n[bars]\ninterval = "1m"\n')
    env = {"DOPE_BARS__GRACE_MS": "1500", "DOPE_COLLECTOR__SYMBOLS": '["BTCUSDT", "ETHUSDT"]', "HOME": "/x"}
    config = load_config(path, environ=env)
    assert config.collector.source == "synthetic"
    assert config.collector.symbols == ("BTCUSDT", "ETHUSDT")
    assert (config.bars.interval_ms, config.bars.grace_ms) == (60_000, 1500)


def test_plain_string_override_needs_no_quotes() -> None:
    assert load_config(None, environ={"DOPE_STORE__PATH": "/data/bars"}).store.path == "/data/bars"


@pytest.mark.parametrize(("text", "named"), [
    ("[collector]\nsorce = 'x'\n", "sorce"),
    ("[bars]\ngrace_ms = 'soon'\n", "$.bars.grace_ms"),
    ("[bars]\ninterval = '7x'\n", "interval"),
    ("[collector]\nsource = 'ftp'\n", "$.collector.source"),
    ("[nonsense]\n", "nonsense"),
    ("[bars\n", "not valid TOML"),
])
def test_bad_config_names_the_field(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match="dope.toml") as error:
        load_config(write(tmp_path, text), environ={})
    assert named in str(error.value)


def test_bad_environment_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"\$\.bars\.grace_ms") as error:
        load_config(None, environ={"DOPE_BARS__GRACE_MS": "abc"})
    assert "environment" in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_domain_packages_do_not_import_the_application_config() -> None:
    """The rendezvous and the bus own their config types; ``dope.config`` composes them (not the reverse)."""
    code = ("import sys, dope.rendezvous, dope.transport; "
            "print(sorted(m for m in sys.modules if m == 'dope.config'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_composed_sections_keep_their_toml_layout_and_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[rendezvous]\ndeadline_ms = 75\nchampion = "rf"\n[bus]\nheartbeat_ms = 250\n')
    config = load_config(path, environ={"DOPE_RENDEZVOUS__CANARIES": '["c"]', "DOPE_BUS__RUN_ID": "r1"})
    assert (config.rendezvous.deadline_ms, config.rendezvous.champion, config.rendezvous.canaries) == (75, "rf", ("c",))
    assert (config.bus.heartbeat_ms, config.bus.run_id) == (250, "r1")
    with pytest.raises(ConfigError, match="rendezvous.*poll_ms|poll_ms"):
        load_config(write(tmp_path, "[rendezvous]\npoll_ms = 0\n"), environ={})
    with pytest.raises(ConfigError, match="bus.heartbeat_ms"):
        load_config(None, environ={"DOPE_BUS__HEARTBEAT_MS": "0"})
