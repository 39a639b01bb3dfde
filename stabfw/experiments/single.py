"""One run of a validated run file: the loop, its analyzers, ``summary.json``, the
figures and the HTML page."""

from __future__ import annotations

from pathlib import Path

from stabfw._util.jsonio import write_json
from stabfw._util.numbers import fmt
from stabfw.analysis.pipeline import analyze_run
from stabfw.reporting.figures import plot_analysis, plot_runs
from stabfw.reporting.html import write_report
from stabfw.run.config import RunConfig
from stabfw.run.registry import make
from stabfw.run.runner import run_loop
from stabfw.run.trajectory import Trajectory

__all__ = ["run_label", "run_single", "write_analysis_figure"]


def run_label(cfg: RunConfig) -> str:
    """How a run is named in legends: its λ."""
    return f"λ = {fmt(cfg.loop.lam, 6)}"


def write_analysis_figure(results: dict, cfg: RunConfig, out: str | Path) -> Path | None:
    """``analysis.png`` of analyzer results, when there is anything to draw."""
    if not any(results.get(k) for k in ("fixed_point", "jacobian", "lambda_curve",
                                         "critical_lambda")):
        return None
    return plot_analysis(results, Path(out) / "analysis.png",
                         title=f"{cfg.domain.name}: {cfg.loop.policy}, {run_label(cfg)}")


def run_single(cfg: RunConfig, out: str | Path, resume: bool = False) -> Trajectory:
    """Run one config into ``out``: trajectory files, ``summary.json``, ``report.png``,
    ``analysis.png`` (with an ``analysis:`` section) and ``report.html``."""
    out = Path(out)
    loop = make(cfg.domain.name, **cfg.domain.params)
    traj = run_loop(loop, cfg.loop, out_dir=out, resume=resume,
                    progress=cfg.output.progress, record=cfg.record())
    summary = traj.summary()
    summary["config"] = traj.config
    if cfg.analysis is not None:  # after the run: the analyzers of the analysis: section
        summary["analysis"] = analyze_run(traj, cfg, progress=cfg.output.progress)
        if cfg.output.report:
            write_analysis_figure(summary["analysis"], cfg, out)
    write_json(out / "summary.json", summary)
    if cfg.output.report:
        plot_runs({run_label(cfg): traj}, out / "report.png",
                  title=f"{cfg.domain.name}: {cfg.loop.policy}, {run_label(cfg)}")
        write_report(out)  # last: the page shows everything written above
    return traj
