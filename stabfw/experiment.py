"""Run a validated run file: one run, or one run per cell of its ``sweep:`` grid."""

from __future__ import annotations

from pathlib import Path

from stabfw import registry
from stabfw.config import RunConfig
from stabfw.report import plot_runs
from stabfw.runner import run_loop
from stabfw.sweep import Cell, _fmt, expand_grid  # the sweep lives in stabfw.sweep (re-exported)
from stabfw.trajectory import Trajectory, write_json

__all__ = ["Cell", "expand_grid", "run_config", "run_single"]


def run_single(cfg: RunConfig, out: str | Path, resume: bool = False) -> Trajectory:
    """Run one config into ``out``: trajectory files, ``summary.json`` and ``report.png``."""
    out = Path(out)
    loop = registry.make(cfg.domain.name, **cfg.domain.params)
    traj = run_loop(loop, cfg.loop, out_dir=out, resume=resume,
                    progress=cfg.output.progress, record=cfg.record())
    summary = traj.summary()
    summary["config"] = traj.config
    if cfg.analysis is not None:  # after the run: the analyzers of the analysis: section
        from stabfw.analysis import analyze_run

        summary["analysis"] = analyze_run(traj, cfg, out=out, progress=cfg.output.progress)
    write_json(out / "summary.json", summary)
    if cfg.output.report:
        plot_runs({_label(cfg): traj}, out / "report.png",
                  title=f"{cfg.domain.name}: {cfg.loop.policy}, λ = {_fmt(cfg.loop.lam)}")
    if cfg.output.report:  # keep last: the page shows everything written above
        from stabfw.html_report import write_report

        write_report(out)
    return traj


def _label(cfg: RunConfig) -> str:
    return f"λ = {_fmt(cfg.loop.lam)}"


def run_config(cfg: RunConfig, out: str | Path, resume: bool = False) -> dict[str, Trajectory]:
    """Run a config file's run, or every cell of its sweep (see :func:`stabfw.sweep.run_sweep`:
    parallel on ``sweep.backend``, skipping finished cells).

    Returns the trajectories by label; a sweep also writes ``index.json``, aggregates,
    the stability diagram and ``report.html`` in ``out``.
    """
    out = Path(out)
    if cfg.sweep is None:
        return {_label(cfg): run_single(cfg, out, resume=resume)}
    from stabfw.sweep import run_sweep

    result = run_sweep(cfg, out, resume=resume)
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} sweep cell(s) failed: {', '.join(result.failed)}"
                           " (tracebacks in the log; re-run to retry them)")
    return result.trajectories()
