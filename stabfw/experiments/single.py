"""One run of a validated run file: the loop, its analyzers, ``summary.json``, the
figures and the HTML page."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stabfw._util.jsonio import read_json, write_json
from stabfw._util.numbers import fmt
from stabfw.analysis.pipeline import analyze_run
from stabfw.errors import ConfigError, RunDirError
from stabfw.experiments.grid import cell_identity
from stabfw.reporting.figures import plot_analysis, plot_headline, plot_runs
from stabfw.reporting.html import write_report
from stabfw.run.callbacks import RunCallback
from stabfw.run.config import RunConfig, metric_references, unknown_metrics
from stabfw.run.registry import make
from stabfw.run.rundir import RunLock, add_to_manifest, ensure_dir
from stabfw.run.runner import run_loop
from stabfw.run.trackers import MLflowTracker
from stabfw.run.trajectory import Trajectory

__all__ = ["MetricNamesCheck", "run_label", "run_single", "write_analysis_figure"]


class MetricNamesCheck(RunCallback):
    """After generation 0, check that the metrics a config names exist (for a domain that
    declares none in :meth:`~stabfw.SelfConsumingLoop.metric_info`, whose names
    ``stabfw validate`` cannot check), before the other generations run.

    Parameters
    ----------
    refs : mapping
        Metric name → the config field that names it.
    """

    def __init__(self, refs: Mapping[str, str]):
        self.refs = dict(refs)

    def on_generation(self, generation: int, theta: Any, metrics: Any) -> None:
        if generation != 0 or not self.refs:
            return
        msg = unknown_metrics(self.refs, metrics.columns)
        if msg:
            raise ConfigError(f"{msg}\n  (found after generation 0, which is checkpointed: fix "
                              "the config and continue with --resume)")


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


def run_single(cfg: RunConfig, out: str | Path, resume: bool = False, force: bool = False,
               required_metrics: Mapping[str, str] | None = None) -> Trajectory:
    """Run one config into ``out``: trajectory files, ``summary.json``, ``report.png``,
    ``analysis.png`` (with an ``analysis:`` section) and ``report.html``.

    Parameters
    ----------
    resume, force : bool
        As :func:`~stabfw.run_loop`. ``resume`` on a run that finished for the same config
        does nothing (it only writes a summary or report an interrupted run lacks); on one
        that finished for another ``analysis:`` section it is refused.
    required_metrics : mapping, optional
        More metric names the results must have (a sweep's stability quantity), each with
        the field that names it.

    Returns
    -------
    Trajectory
        ``meta["already_finished"]`` is True when nothing was run.
    """
    out = ensure_dir(out)
    loop = make(cfg.domain.name, **cfg.domain.params)
    refs = {**metric_references(cfg), **dict(required_metrics or {})}
    declared = loop.metric_info()
    if declared:  # checked before any work (validate does the same)
        msg = unknown_metrics(refs, declared)
        if msg:
            raise ConfigError(msg)
    callbacks: list[RunCallback] = [] if declared or not refs else [MetricNamesCheck(refs)]
    record = cfg.record()
    if cfg.output.mlflow is not None:
        callbacks.append(MLflowTracker(cfg.output.mlflow.tracking_uri, cfg.output.mlflow.experiment,
                                       run_name=f"{cfg.domain.name} {run_label(cfg)} ({out.name})",
                                       params=record, tags={"stabfw.out": str(out)}))
    with RunLock(out):
        traj = run_loop(loop, cfg.loop, out_dir=out, resume=resume, force=force,
                        progress=cfg.output.progress, record=record, callbacks=callbacks,
                        checkpoint=cfg.output.checkpoint)
        if traj.meta.get("already_finished"):
            summary_path = out / "summary.json"
            if summary_path.is_file():
                stored = (read_json(summary_path).get("config")) or {}
                if cell_identity(stored) != cell_identity(record):
                    raise RunDirError(
                        f"{out} holds this run, finished with another analysis: section; it "
                        "was left unchanged. Re-analyse it with `stabfw analyze "
                        f"{out} --config FILE`, or use --force to run it again", out)
                return traj
        _finish(traj, cfg, out)
    return traj


def _partial_writer(out: Path, meta: dict[str, Any]):
    """``on_result`` of :func:`analyze_run`: each analyzer's result to
    ``OUT/analysis/<name>.json`` as soon as it finishes, and its seconds to
    ``meta["phase_seconds"]`` (the retraining's own seconds are ``meta["seconds"]``)."""
    phases = meta.setdefault("phase_seconds", {"retraining": meta.get("seconds")})
    last = [time.perf_counter()]

    def write(name: str, result: Any) -> None:
        now = time.perf_counter()
        phases[f"analysis.{name}"] = round(phases.get(f"analysis.{name}", 0) + now - last[0], 3)
        last[0] = now
        write_json(ensure_dir(out / "analysis") / f"{name}.json", result)

    return write


def _finish(traj: Trajectory, cfg: RunConfig, out: Path) -> None:
    """summary.json (in the manifest), the analyzers, the figures and the page."""
    summary = traj.summary()
    summary["meta"] = {k: v for k, v in summary["meta"].items() if k != "already_finished"}
    summary["config"] = traj.config
    if cfg.analysis is not None:  # after the run: the analyzers of the analysis: section
        summary["analysis"] = analyze_run(traj, cfg, progress=cfg.output.progress,
                                          on_result=_partial_writer(out, summary["meta"]))
        if cfg.output.report:
            write_analysis_figure(summary["analysis"], cfg, out)
            if summary["analysis"].get("headline"):
                plot_headline(summary["analysis"]["headline"], out / "headline.png",
                              title=f"{cfg.domain.name}: {cfg.loop.policy}")
    write_json(out / "summary.json", summary)
    add_to_manifest(out, ["summary.json"])
    if cfg.output.report:
        plot_runs({run_label(cfg): traj}, out / "report.png",
                  title=f"{cfg.domain.name}: {cfg.loop.policy}, {run_label(cfg)}")
        write_report(out)  # last: the page shows everything written above
