"""The `cyseg` command line: one module per sub-command, each with `register(subparsers)`.

A command module's `register` adds its sub-parser and sets `func` (called with the parsed
arguments, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cyseg.errors import CysegError

COMMANDS = ("train", "segment", "evaluate", "serve", "demo", "bench", "focus", "dataset", "improve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cyseg.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CysegError, ValueError, FileNotFoundError) as error:
        if args.verbose:
            raise
        print(f"cyseg {args.command}: error: {error}", file=sys.stderr)
        return 2
