"""``stabfw report DIR``: (re)write the HTML page of a run or sweep, and a sweep's diagrams."""

from __future__ import annotations

import argparse
from pathlib import Path

from stabfw._util.jsonio import read_json
from stabfw.experiments.stability import write_stability
from stabfw.reporting.html import write_report
from stabfw.run.config import parse_config

__all__ = ["register"]


def cmd_report(args: argparse.Namespace) -> int:
    """Write ``report.html`` (and, for a sweep, redraw its stability diagrams)."""
    root = Path(args.dir)
    if (root / "index.json").is_file() and not args.no_plots:
        index = read_json(root / "index.json")
        cfg = parse_config(index["config"], validate_domain=False)
        if cfg.sweep is not None:
            write_stability(root, cfg.sweep)
    target = write_report(root, args.out)
    print(f"wrote {target}")
    return 0


def register(sub) -> None:
    """Add ``stabfw report`` to the CLI's subparsers."""
    p = sub.add_parser("report", help="write a self-contained HTML page for a run or sweep dir")
    p.add_argument("dir", help="a run directory or a sweep directory")
    p.add_argument("--out", help="where to write (default: DIR/report.html)")
    p.add_argument("--no-plots", action="store_true",
                   help="for a sweep: do not redraw the stability diagrams")
    p.set_defaults(func=cmd_report)
