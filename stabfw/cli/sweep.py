"""``stabfw sweep CONFIG``: run every cell of a config's sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from stabfw.cli.common import add_set_option, default_out, print_headline
from stabfw.errors import ConfigError
from stabfw.experiments.runfile import sweep_failure
from stabfw.experiments.sweep import run_sweep
from stabfw.run.config import load_config

__all__ = ["register"]


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; exit 1 when a cell failed."""
    if args.resume and args.force:
        raise ConfigError("--resume continues cells and --force recomputes them; give one")
    cfg = load_config(args.config, args.set)
    if cfg.sweep is None:
        raise ConfigError(f"{args.config} has no 'sweep:' section; add sweep.grid "
                          "(e.g. {loop.lam: [0, 0.5, 1]}) or use `stabfw run`")
    out = Path(args.out or cfg.output.dir or default_out(args.config))
    args.resolved_out = out
    res = run_sweep(cfg, out, backend=args.backend, workers=args.workers,
                    address=args.address, resume=args.resume, force=args.force)
    n_skip = sum(r.status == "skipped" for r in res.results.values())
    print_headline(out, sweep=True)
    print(f"wrote {out}/ ({len(res.cells)} cells, {n_skip} already finished, "
          f"backend {res.backend}, {res.seconds:.1f} s); report: {out / 'report.html'}")
    if res.failed:
        raise sweep_failure(res)
    return 0


def register(sub) -> None:
    """Add ``stabfw sweep`` to the CLI's subparsers."""
    p = sub.add_parser("sweep", help="run every cell of a config's sweep: grid")
    p.add_argument("config")
    p.add_argument("--backend", choices=["auto", "serial", "local", "ray"],
                   help="where cells run (default: sweep.backend, else auto = local if joblib "
                        "is installed)")
    p.add_argument("--workers", type=int, help="parallel workers (default: one per core)")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--out", help="sweep directory (default: output.dir or runs/<config name>)")
    add_set_option(p)
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted cells from their checkpoints")
    p.add_argument("--force", action="store_true",
                   help="recompute every cell, replacing finished ones")
    p.set_defaults(func=cmd_sweep)
