"""``dope config``: print the effective configuration (file + environment), validated."""

from __future__ import annotations

import argparse

import msgspec.toml

from dope.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (default: built-in defaults)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(msgspec.toml.encode(config).decode(), end="")
    return 0
