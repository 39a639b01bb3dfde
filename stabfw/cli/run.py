"""``stabfw run CONFIG``: run an experiment (one run, or every cell of its sweep)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stabfw.cli.common import add_set_option, default_out, print_headline
from stabfw.errors import ConfigError
from stabfw.experiments.runfile import run_config
from stabfw.run.config import load_config
from stabfw.run.trajectory import nonfinite_summary

__all__ = ["register"]


class _DropNonfiniteLog(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "stabfw_nonfinite", False)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the config; print where the results are (and any non-finite events)."""
    if args.resume and args.force:
        raise ConfigError("--resume continues a run and --force (--restart) discards it; "
                          "give one of them")
    overrides = list(args.set or [])
    if args.workers is not None:  # validated with the rest of the loop: section
        overrides.append(f"loop.workers={args.workers}")
    cfg = load_config(args.config, overrides)
    out = Path(args.out or cfg.output.dir or default_out(args.config))
    args.resolved_out = out
    quiet = _DropNonfiniteLog()  # printed once below, as a warning of this command
    runner_log = logging.getLogger("stabfw.run.runner")
    runner_log.addFilter(quiet)
    try:
        runs = run_config(cfg, out, resume=args.resume, force=args.force)
    finally:
        runner_log.removeFilter(quiet)
    for label, traj in runs.items():
        if traj.events:
            text = nonfinite_summary(traj.events, traj.meta.get("on_nonfinite"))["text"]
            where = f" ({label})" if len(runs) > 1 else ""
            print(f"stabfw run: warning{where}: {text}", file=sys.stderr)
    if cfg.sweep is None and all(t.meta.get("already_finished") for t in runs.values()):
        print(f"{out}/ holds this run, finished already for the same configuration; "
              "nothing to do")
        return 0
    print_headline(out, sweep=cfg.sweep is not None)
    report = out / "report.html"
    shown = f"; report: {report}" if cfg.output.report and report.is_file() else ""
    print(f"wrote {out}/ ({len(runs)} run{'s' if len(runs) != 1 else ''}){shown}")
    return 0


def register(sub) -> None:
    """Add ``stabfw run`` to the CLI's subparsers."""
    p = sub.add_parser(
        "run", help="run an experiment from a YAML config",
        description="Run a config into a run directory. A directory that holds a run is "
                    "never overwritten silently: --resume continues an interrupted run (and "
                    "does nothing for a finished one of the same config); --force (alias "
                    "--restart) discards what is there and starts again.")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: output.dir or runs/<config name>)")
    add_set_option(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (a no-op for a finished one)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="advance the seeds of a run on N worker processes, or, on the "
                        "vectorised path, N threads of ≥ 2000 seeds each (loop.workers; "
                        "bit-identical results)")
    p.add_argument("--force", "--restart", dest="force", action="store_true",
                   help="discard the directory's run (finished or not) and start again")
    p.set_defaults(func=cmd_run)
