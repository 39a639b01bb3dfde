"""Run a validated run file: one run, or one run per cell of its ``sweep:`` grid."""

from __future__ import annotations

from pathlib import Path

from stabfw.experiments.single import run_label, run_single
from stabfw.experiments.sweep import run_sweep
from stabfw.run.config import RunConfig
from stabfw.run.trajectory import Trajectory

__all__ = ["SweepFailed", "run_config"]


class SweepFailed(RuntimeError):
    """Some cells of a sweep raised; the others finished and were written."""


def run_config(cfg: RunConfig, out: str | Path, resume: bool = False) -> dict[str, Trajectory]:
    """Run a config file's run, or every cell of its sweep (see
    :func:`stabfw.experiments.sweep.run_sweep`: parallel on ``sweep.backend``, skipping
    finished cells).

    Returns the trajectories by label; a sweep also writes ``index.json``, aggregates,
    the stability diagram and ``report.html`` in ``out``.
    """
    out = Path(out)
    if cfg.sweep is None:
        return {run_label(cfg): run_single(cfg, out, resume=resume)}
    result = run_sweep(cfg, out, resume=resume)
    if result.failed:
        raise SweepFailed(f"{len(result.failed)} sweep cell(s) failed: {', '.join(result.failed)}"
                          " (tracebacks in the log; re-run to retry them)")
    return result.trajectories()
