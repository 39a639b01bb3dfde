"""``stabfw validate CONFIG``: check a config without running it."""

from __future__ import annotations

import argparse

from stabfw.cli.common import add_set_option
from stabfw.experiments.grid import expand_grid
from stabfw.run.config import load_config
from stabfw.run.registry import make
from stabfw.run.sizing import estimate_size

__all__ = ["register"]


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the config (and every sweep cell) with every check ``stabfw run`` makes
    before its first generation; print what it would run and how big it is."""
    cfg = load_config(args.config, args.set)  # the domain, hooks, metric names, size
    cells = expand_grid(cfg)  # every cell the same way
    extra = f", sweep of {len(cells)} cells" if cells else ""
    loop = make(cfg.domain.name, **cfg.domain.params)
    hint = loop.size_hint() or {}
    declared = loop.metric_info()
    size = estimate_size(cfg.loop.n_seeds, cfg.loop.generations, hint.get("dim_theta"),
                         len(declared) if declared else None)
    per = " per cell" if cells else ""
    print(f"{args.config}: valid (domain {cfg.domain.name}, policy {cfg.loop.policy}, "
          f"λ = {cfg.loop.lam}, {cfg.loop.generations} generations, "
          f"{cfg.loop.n_seeds} seeds{extra}); results {size.describe()}{per}")
    return 0


def register(sub) -> None:
    """Add ``stabfw validate`` to the CLI's subparsers."""
    p = sub.add_parser("validate", help="check a config without running it (every check "
                                        "`stabfw run` makes before its first generation)")
    p.add_argument("config")
    add_set_option(p)
    p.set_defaults(func=cmd_validate)
