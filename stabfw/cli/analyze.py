"""``stabfw analyze RUN_DIR``: run the analyzers on a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stabfw._util.jsonio import read_json, write_json
from stabfw._util.numbers import fmt
from stabfw._util.yamlio import load_yaml
from stabfw.analysis.pipeline import analyze_run
from stabfw.cli.common import add_set_option
from stabfw.errors import ConfigError, RunDirError, StabfwError
from stabfw.experiments.single import write_analysis_figure
from stabfw.run.config import apply_overrides, parse_config
from stabfw.run.rundir import add_to_manifest
from stabfw.run.trajectory import Trajectory

__all__ = ["register"]


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse a run directory; merge the results into its ``summary.json``."""
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory", run_dir)
    traj = Trajectory.load(run_dir)  # verified against the run's manifest
    raw = dict(traj.config)
    if args.config:
        try:
            extra = load_yaml(Path(args.config).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ConfigError(f"--config {args.config}: {err.strerror or err}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {args.config}: not valid YAML: {err}") from None
        if not isinstance(extra, dict) or "analysis" not in extra:
            raise ConfigError(f"{args.config}: needs an 'analysis:' section")
        raw["analysis"] = extra["analysis"]
    raw = apply_overrides(raw, args.set)
    if raw.get("analysis") is None:
        raw["analysis"] = {"jacobian": True}
    cfg = parse_config(raw)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = analyze_run(traj, cfg, progress=True)
    except StabfwError:
        raise
    except Exception as err:  # the analyzers' own errors: say what in the run caused them
        raise StabfwError(f"the analysis of {run_dir} failed: {type(err).__name__}: {err}"
                          f"{_nonfinite_context(traj, run_dir)}") from err
    if not args.no_report:
        write_analysis_figure(results, cfg, out)
    summary_path = out / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else traj.summary()
    summary["analysis"] = results
    write_json(summary_path, summary)
    if out == run_dir:
        add_to_manifest(run_dir, ["summary.json"])
    _print_summary(results)
    print(f"wrote {summary_path}" + ("" if args.no_report else f" and {out / 'analysis.png'}"))
    return 0


def _nonfinite_context(traj: Trajectory, run_dir: Path) -> str:
    """Why an analyzer may have failed: the run's θ is not finite everywhere."""
    bad = ~np.isfinite(traj.params).all(axis=-1)  # (seeds, generations + 1)
    if not bad.any():
        return ""
    seeds = np.flatnonzero(bad.any(axis=1))
    first = int(np.argmax(bad.any(axis=0)))
    shown = ", ".join(str(int(traj.seeds[i])) for i in seeds[:8]) + (" …" if seeds.size > 8 else "")
    return (f"\nThe run's θ is non-finite from generation {first} in {seeds.size} of "
            f"{traj.seeds.size} seeds ({shown}); the loop diverged there (see the run's "
            "events in summary.json). The Jacobian analyzers need a finite θ*; for the "
            f"fixed-point verdict alone: stabfw analyze {run_dir} "
            "--set analysis.jacobian=false")


def _print_summary(results: dict[str, Any]) -> None:
    fp = results.get("fixed_point")
    if fp:
        print(f"fixed point: {fp['verdict']} — {fp['reason']}")
    for name, r in (results.get("jacobian") or {}).items():
        print(f"ρ(J) by {name}: {fmt(r['spectral_radius'])} (norm {fmt(r['spectral_norm'])}, "
              f"{r['n_matvecs']} applications, {r['wall_time']:.1f} s, residual "
              f"‖G(θ)−θ‖ = {fmt(r['residual'], 3)})")
        b = r.get("bounds") or {}
        if b.get("alpha") is not None:
            rate = b.get("rate")
            print(f"  Theorem 1: α={b['alpha']:.3g}, L={b['L']:.3g}, ε={b['eps']:.3g} → "
                  + (f"ρ ≤ {rate:.3g}" if not b["vacuous"] else "vacuous (condition fails)"))
    if results.get("solve"):
        s = results["solve"]
        print(f"fixed point by {s['method']}: {s['status']}, residual {fmt(s['residual'], 3)}, "
              f"{s['n_evaluations']} map evaluations")
    if results.get("critical_lambda"):
        c = results["critical_lambda"]
        print(f"critical λ: {fmt(c['lam_star'])} ± {fmt(c['uncertainty'])} ({c['status']})")


def register(sub) -> None:
    """Add ``stabfw analyze`` to the CLI's subparsers."""
    p = sub.add_parser("analyze", help="run the fixed-point and Jacobian analyzers on a run")
    p.add_argument("run_dir", help="a finished run directory (from `stabfw run`)")
    p.add_argument("--config", help="a YAML file whose 'analysis:' section replaces the run's")
    add_set_option(p, "analysis.jacobian.methods=[dense,implicit]")
    p.add_argument("--out", help="where to write (default: the run directory)")
    p.add_argument("--no-report", action="store_true", help="skip analysis.png")
    p.set_defaults(func=cmd_analyze)
