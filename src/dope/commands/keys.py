"""``dope keys``: CURVE key pairs for a bus that crosses machines (``docs/bus.md``, Security).

    dope keys generate var/keys --name server
    dope keys generate var/keys --name model-host --authorize var/keys/authorized

writes ``NAME.key`` (public: give it to the peers) and ``NAME.key_secret`` (public + secret,
mode 600: keep it on its host). ``--authorize DIR`` also copies the public key into DIR, the
folder a publisher's ``bus.curve_authorized_dir`` names.
"""

from __future__ import annotations

import argparse

from dope.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = sub.add_parser("generate", help="write a new CURVE key pair NAME.key / NAME.key_secret into DIR")
    gen.add_argument("directory", metavar="DIR", help="folder for the key files (created if missing)")
    gen.add_argument("--name", default="dope", help="base name of the key files (default: dope)")
    gen.add_argument("--authorize", metavar="AUTH_DIR",
                     help="also copy the public key into this authorized-keys folder")
    gen.add_argument("--force", action="store_true", help="overwrite existing key files of that name")


def run(args: argparse.Namespace) -> int:
    from dope.transport.curve import authorize, generate_key_pair

    if not args.name or "/" in args.name or args.name.startswith("."):
        raise UserError(f"--name {args.name!r} must be a plain file name (no '/', not starting with '.')")
    public, secret = generate_key_pair(args.directory, args.name, overwrite=args.force)
    print(f"public key: {public}")
    print(f"secret key: {secret} (mode 600: keep it on this host)")
    if args.authorize:
        print(f"authorized: {authorize(public, args.authorize)}")
    return 0
