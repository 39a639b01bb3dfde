"""``stabfw validate CONFIG``: check a config without running it."""

from __future__ import annotations

import argparse

from stabfw.cli.common import add_set_option
from stabfw.experiments.grid import expand_grid
from stabfw.run.config import load_config

__all__ = ["register"]


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the config (and every sweep cell); print what it would run."""
    cfg = load_config(args.config, args.set)
    cells = expand_grid(cfg)
    extra = f", sweep of {len(cells)} cells" if cells else ""
    print(f"{args.config}: valid (domain {cfg.domain.name}, policy {cfg.loop.policy}, "
          f"λ = {cfg.loop.lam}, {cfg.loop.generations} generations, "
          f"{len(cfg.loop.seed_list)} seeds{extra})")
    return 0


def register(sub) -> None:
    """Add ``stabfw validate`` to the CLI's subparsers."""
    p = sub.add_parser("validate", help="check a config without running it")
    p.add_argument("config")
    add_set_option(p)
    p.set_defaults(func=cmd_validate)
