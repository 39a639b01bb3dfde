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
from stabfw.analysis.recorded import analyze_recorded, load_recorded
from stabfw.cli.common import add_set_option
from stabfw.errors import ConfigError, RunDirError, StabfwError
from stabfw.experiments.single import write_analysis_figure
from stabfw.reporting.figures import plot_analysis
from stabfw.run.config import apply_overrides, parse_config
from stabfw.run.rundir import add_to_manifest
from stabfw.run.trajectory import Trajectory

__all__ = ["register"]


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse a run directory (merging the results into its ``summary.json``), or a
    trajectory recorded elsewhere (a ``.csv`` or ``.npz`` file)."""
    run_dir = Path(args.run_dir)
    if run_dir.suffix.lower() in (".csv", ".npz") or (run_dir.is_file()):
        return _analyze_file(args, run_dir)
    for opt in ("theta", "metrics", "diversity", "burn_in", "confidence"):
        if getattr(args, opt) is not None:
            raise ConfigError(f"--{opt.replace('_', '-')} applies to a recorded .csv/.npz file, "
                              f"not to a run directory ({run_dir})")
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


def _analyze_file(args: argparse.Namespace, path: Path) -> int:
    """``stabfw analyze FILE.csv|FILE.npz``: the verdict/rate/level/limit report."""
    if args.confidence is not None and not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must lie in (0, 1), got {args.confidence}")
    if args.burn_in is not None and args.burn_in < 0:
        raise ConfigError(f"--burn-in must be ≥ 0, got {args.burn_in}")
    panel = load_recorded(path, theta=args.theta, metrics=args.metrics)
    results = analyze_recorded(panel, diversity=args.diversity,
                               confidence=args.confidence or 0.9, burn_in=args.burn_in)
    out = Path(args.out) if args.out else path.parent / f"{path.stem}_analysis"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", results)
    wrote = [out / "analysis.json"]
    if not args.no_report:
        wrote.append(plot_analysis({"fixed_point": results["fixed_point"]}, out / "analysis.png",
                                   title=f"{path.name}: {panel.theta.shape[0]} seeds × "
                                         f"{panel.theta.shape[1] - 1} generations"))
    fp = results["fixed_point"]
    print(f"fixed point: {fp['verdict']} — {fp['verdict_reason']}")
    print(f"  limit θ̂_∞ {fmt(fp['limit_distance_to_theta_star'])} from θ* (generation 0); "
          f"level {fmt(fp['level'])}; burn-in {fp['burn_in']} generations")
    for m, r in (results.get("fixed_point_metrics") or {}).items():
        print(f"{m}: {r['verdict']} — {r['verdict_reason']}")
    print_headline_dict(results["headline"])
    print("wrote " + " and ".join(str(w) for w in wrote))
    return 0


def print_headline_dict(h: dict[str, Any]) -> None:
    """The headline sentences of a headline dict."""
    print("headline:")
    for row in h.get("rows", []):
        print(f"  {row.get('text')}")


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
        print(f"fixed point: {fp['verdict']} — {fp.get('verdict_reason', fp.get('reason'))}")
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
        print(c.get("text") or f"critical λ: {fmt(c.get('lam_star'))} ({c.get('status')})")
    if results.get("headline"):
        print_headline_dict(results["headline"])
        crit = (results["headline"].get("critical") or {}).get("text")
        if crit:
            print(f"  {crit}")


def register(sub) -> None:
    """Add ``stabfw analyze`` to the CLI's subparsers."""
    p = sub.add_parser(
        "analyze", help="run the fixed-point and Jacobian analyzers on a run, or on a "
        "trajectory recorded elsewhere (.csv / .npz)",
        description="RUN_DIR: a finished run directory (from `stabfw run`). FILE.csv: columns "
                    "seed, generation, then θ entries and/or metrics; FILE.npz: theta "
                    "(seeds × generations+1 × d) and optional metric arrays. A file gets the "
                    "fixed-point report (verdict, rate, level, limit) in OUT/analysis.json.")
    p.add_argument("run_dir", metavar="RUN_DIR|FILE",
                   help="a finished run directory, or a recorded .csv/.npz trajectory")
    p.add_argument("--theta", help="file: comma-separated θ columns (default: all but "
                                   "seed, generation and --metrics; NPZ: the array name)")
    p.add_argument("--metrics", help="file: comma-separated metric columns/arrays")
    p.add_argument("--diversity", help="file: which metrics measure diversity (collapse = "
                                       "one heading to 0)")
    p.add_argument("--confidence", type=float, help="file: interval level (default 0.9)")
    p.add_argument("--burn-in", type=int, help="file: first stationary generation "
                                               "(default: chosen from the data)")
    p.add_argument("--config", help="a YAML file whose 'analysis:' section replaces the run's")
    add_set_option(p, "analysis.jacobian.methods=[dense,implicit]")
    p.add_argument("--out", help="where to write (default: the run directory)")
    p.add_argument("--no-report", action="store_true", help="skip analysis.png")
    p.set_defaults(func=cmd_analyze)
