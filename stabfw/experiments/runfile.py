"""Run a validated run file: one run, or one run per cell of its ``sweep:`` grid."""

from __future__ import annotations

from pathlib import Path

from stabfw.errors import SweepFailed, clip
from stabfw.experiments.single import run_label, run_single
from stabfw.experiments.sweep import run_sweep
from stabfw.run.config import RunConfig
from stabfw.run.trajectory import Trajectory

__all__ = ["SweepFailed", "run_config"]


def run_config(cfg: RunConfig, out: str | Path, resume: bool = False,
               force: bool = False) -> dict[str, Trajectory]:
    """Run a config file's run, or every cell of its sweep (see
    :func:`stabfw.experiments.sweep.run_sweep`: parallel on ``sweep.backend``, skipping
    finished cells).

    Returns the trajectories by label; a sweep also writes ``index.json``, aggregates,
    the stability diagram and ``report.html`` in ``out``.

    Raises
    ------
    SweepFailed
        When cells failed (the others are written); ``failed`` maps each to its error.
    """
    out = Path(out)
    if cfg.sweep is None:
        return {run_label(cfg): run_single(cfg, out, resume=resume, force=force)}
    result = run_sweep(cfg, out, resume=resume, force=force)
    if result.failed:
        raise sweep_failure(result)
    return result.trajectories()


def sweep_failure(result) -> SweepFailed:
    """The :class:`SweepFailed` of a sweep result with failed cells: one line per cell."""
    failed = {n: (result.results[n].error or "").strip() for n in result.failed}
    lines = "\n".join(f"  {n}: {clip(' '.join(e.split()), 300) if e else '?'}" for n, e in
                      list(failed.items())[:10])
    more = f"\n  … and {len(failed) - 10} more" if len(failed) > 10 else ""
    return SweepFailed(f"{len(failed)} sweep cell(s) failed (the others finished and were "
                       f"written):\n{lines}{more}\nFix the cause and run the same command again "
                       "to retry them (finished cells are skipped)", failed)
