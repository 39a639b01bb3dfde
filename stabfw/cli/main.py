"""The ``stabfw`` command line: one module per subcommand, each with a ``register``."""

from __future__ import annotations

import argparse
import logging
import sys

from stabfw.cli import analyze, listing, report, run, sweep, validate
from stabfw.errors import ConfigError
from stabfw.run.provenance import VERSION

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: The subcommand modules, in the order ``stabfw --help`` lists them.
SUBCOMMANDS = (run, validate, listing, sweep, analyze, report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="stabfw", description="Does a model retrained on its own outputs stay healthy "
                                   "or collapse?")
    parser.add_argument("--version", action="version", version=f"stabfw {VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stabfw`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"stabfw {args.command}: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"stabfw {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
