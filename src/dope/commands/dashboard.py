"""``dope dashboard``: the live dashboard on its own (``dope up`` starts the same service with the rest)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dope.services.dashboard import add_arguments as service_arguments

    parser.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    parser.add_argument("--name", help="service name in heartbeats and logs (default dashboard)")
    parser.add_argument("--log-level", help="override the configured log level")
    service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dope.services.dashboard import main

    argv = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
            if value is not None and key != "endpoints"]
    for endpoint in args.endpoints or []:
        argv.append(f"--endpoint={endpoint}")
    return main(argv)
