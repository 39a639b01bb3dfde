"""``stabfw list``: the registered domains and whether their extras are installed."""

from __future__ import annotations

import argparse

from stabfw.errors import ConfigError
from stabfw.run import registry

__all__ = ["register"]


def cmd_list(args: argparse.Namespace) -> int:
    """One line per domain."""
    for entry in registry.list_domains():
        try:
            registry.get(entry.name)
            status = "ok"
        except ConfigError:
            status = f"needs: pip install 'stabfw[{entry.extra}]'" if entry.extra else "broken"
        print(f"{entry.name:<12} {entry.summary}  [{status}]")
    return 0


def register(sub) -> None:
    """Add ``stabfw list`` to the CLI's subparsers."""
    p = sub.add_parser("list", help="list registered domains")
    p.set_defaults(func=cmd_list)
