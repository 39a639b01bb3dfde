"""The ``stabfw`` command line.

Subcommands are small functions registered in ``COMMANDS``; each takes the parsed
arguments and returns an exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stabfw.config import ConfigError, load_config

__all__ = ["main"]


def _default_out(config_path: str) -> Path:
    return Path("runs") / Path(config_path).stem


def cmd_run(args: argparse.Namespace) -> int:
    from stabfw.experiment import run_config

    cfg = load_config(args.config, args.set)
    out = Path(args.out or cfg.output.dir or _default_out(args.config))
    runs = run_config(cfg, out, resume=args.resume)
    print(f"wrote {out}/ ({len(runs)} run{'s' if len(runs) != 1 else ''}); "
          f"report: {out / 'report.html'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    from stabfw.experiment import expand_grid

    cells = expand_grid(cfg)
    extra = f", sweep of {len(cells)} cells" if cells else ""
    print(f"{args.config}: valid (domain {cfg.domain.name}, policy {cfg.loop.policy}, "
          f"λ = {cfg.loop.lam}, {cfg.loop.generations} generations, "
          f"{len(cfg.loop.seed_list)} seeds{extra})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from stabfw import registry

    for entry in registry.list_domains():
        try:
            registry.get(entry.name)
            status = "ok"
        except ConfigError:
            status = f"needs: pip install 'stabfw[{entry.extra}]'" if entry.extra else "broken"
        print(f"{entry.name:<12} {entry.summary}  [{status}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="stabfw", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run an experiment from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: output.dir or runs/<config name>)")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. --set loop.lam=0.5")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a config without running it")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list registered domains")
    p.set_defaults(func=cmd_list)

    from stabfw import html_report, sweep
    from stabfw.analysis import register_cli as analysis_cli

    if analysis_cli not in EXTENSIONS:
        EXTENSIONS.append(analysis_cli)
    for register in [sweep.register_cli, html_report.register_cli, *EXTENSIONS]:
        register(sub)
    return parser


#: Functions ``f(subparsers)`` that add more subcommands (analyzers, sweeps, reports).
EXTENSIONS: list = []


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
