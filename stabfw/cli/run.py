"""``stabfw run CONFIG``: run an experiment (one run, or every cell of its sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stabfw.cli.common import add_set_option, default_out
from stabfw.experiments.runfile import run_config
from stabfw.run.config import load_config

__all__ = ["register"]


def cmd_run(args: argparse.Namespace) -> int:
    """Run the config; print where the results are."""
    cfg = load_config(args.config, args.set)
    out = Path(args.out or cfg.output.dir or default_out(args.config))
    runs = run_config(cfg, out, resume=args.resume)
    print(f"wrote {out}/ ({len(runs)} run{'s' if len(runs) != 1 else ''}); "
          f"report: {out / 'report.html'}")
    return 0


def register(sub) -> None:
    """Add ``stabfw run`` to the CLI's subparsers."""
    p = sub.add_parser("run", help="run an experiment from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: output.dir or runs/<config name>)")
    add_set_option(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=cmd_run)
