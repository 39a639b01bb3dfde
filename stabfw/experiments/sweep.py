"""Sweeps: a grid over config fields, one ordinary run directory per cell.

A sweep directory holds::

    OUT/index.json        the sweep's config and one entry per cell (overrides, status, time)
    OUT/aggregates.csv    one row per cell: the swept values and last-generation statistics
    OUT/results.csv       one row per cell, seed and generation: swept values, then metrics
    OUT/cells/<name>/     an ordinary run directory (resume or analyse it alone)
    OUT/report.png        metric curves of every cell
    OUT/stability.png     the stability diagram (see :mod:`stabfw.experiments.stability`)
    OUT/report.html       a self-contained page with all of the above

A re-run skips the cells whose run directory is finished for the same configuration, so
an interrupted sweep continues where it stopped and a grown grid only runs its new cells.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabfw._util.atomic import atomic_write, clean_temp_files
from stabfw._util.jsonio import flatten, read_json, write_json
from stabfw.analysis.headline import sweep_headline
from stabfw.analysis.pipeline import headline_options
from stabfw.errors import ConfigError, RunDirError, StabfwError, clip
from stabfw.experiments.grid import Cell, cell_state, expand_grid
from stabfw.experiments.single import run_single
from stabfw.experiments.stability import write_stability
from stabfw.reporting.figures import plot_headline, plot_runs
from stabfw.reporting.html import write_report
from stabfw.run import registry
from stabfw.run.analysis_config import HeadlineOptions
from stabfw.run.backends import check_backend_args, make_backend
from stabfw.run.config import RunConfig, metric_references
from stabfw.run.rundir import RunLock, ensure_dir
from stabfw.run.trajectory import Trajectory

__all__ = ["CellResult", "SweepResult", "aggregates", "long_results", "run_cell", "run_sweep",
           "write_headline", "write_outputs"]

log = logging.getLogger(__name__)


@dataclass
class CellResult:
    """What running (or skipping) one cell gave."""

    name: str
    status: str  # "done", "skipped" (finished before) or "failed"
    seconds: float = 0.0
    error: str | None = None
    summary: dict[str, Any] | None = None


@dataclass
class SweepResult:
    """A finished sweep: where it lies, its cells and what each gave."""

    out: Path
    cells: list[Cell]
    results: dict[str, CellResult] = field(default_factory=dict)
    backend: str = "serial"
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        """Names of the cells that raised."""
        return [n for n, r in self.results.items() if r.status == "failed"]

    def trajectories(self) -> dict[str, Trajectory]:
        """Every finished cell's trajectory, by cell name (read from disk)."""
        return {c.name: Trajectory.load(self.out / "cells" / c.name) for c in self.cells
                if self.results.get(c.name) and self.results[c.name].status != "failed"}


# --- running ------------------------------------------------------------------------
def _domain_registration(name: str) -> tuple[str, str] | None:
    """A run-time registration a worker process must repeat (built-ins need none)."""
    entry = {e.name: e for e in registry.list_domains()}.get(name)
    if entry is None or registry.is_builtin(name):
        return None
    return entry.name, entry.target


def run_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in the current process; what every backend calls (picklable).

    ``task`` holds ``name``, ``config`` (a :class:`RunConfig`), ``dir`` (absolute),
    ``resume``, ``force``, ``metrics`` (metric names the sweep needs) and
    ``registration``. Returns a plain dict (status, seconds, summary or a one-line
    ``error``) so that a failing cell does not stop the others. The traceback of an error
    that is not a user's mistake goes to the cell's ``error.log``, not to the console.
    """
    t0 = time.perf_counter()
    cell_dir = Path(task["dir"])
    try:
        reg = task.get("registration")
        if reg is not None and not registry.is_loaded(reg[0]):
            registry.register(reg[0], reg[1], overwrite=True)
        run_single(task["config"], cell_dir, resume=task.get("resume", False),
                   force=task.get("force", False), required_metrics=task.get("metrics"))
        summary = read_json(cell_dir / "summary.json")
        (cell_dir / "error.log").unlink(missing_ok=True)
        return {"name": task["name"], "status": "done", "seconds": time.perf_counter() - t0,
                "summary": summary}
    except StabfwError as err:
        error = clip(str(err), 1000)
    except Exception as err:
        error = clip(f"{type(err).__name__}: {err}", 800)
        try:
            text = traceback.format_exc()
            atomic_write(cell_dir / "error.log", lambda f: f.write(text.encode("utf-8")))
            error += f" (traceback in {cell_dir / 'error.log'})"
        except OSError:
            pass
    return {"name": task["name"], "status": "failed", "seconds": time.perf_counter() - t0,
            "error": error}


def run_sweep(
    cfg: RunConfig,
    out: str | Path,
    backend: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    force: bool = False,
) -> SweepResult:
    """Run every cell of ``cfg``'s sweep that is not finished yet, then write the aggregates.

    Parameters
    ----------
    cfg : RunConfig
        A config with a ``sweep:`` section.
    out : path
        The sweep directory.
    backend : {"auto", "serial", "local", "ray"}, optional
        Where the cells run (default: ``sweep.backend`` of the config, else ``"auto"``:
        ``local`` when joblib is installed and more than one cell is pending).
    workers : int, optional
        Parallel workers (default: ``sweep.workers``, else one per CPU core).
    address : str, optional
        A Ray cluster address (default: ``sweep.address``, else a local Ray instance).
    resume : bool
        Continue interrupted cells from their checkpoints (without it they start again).
    force : bool
        Recompute every cell, replacing finished ones; without it a cell directory holding
        a finished run of another configuration is refused before any cell runs.
    progress : bool, optional
        Show a progress bar over cells (default: ``output.progress``).

    Returns
    -------
    SweepResult
    """
    if cfg.sweep is None:
        raise ConfigError("this config has no 'sweep:' section; add sweep.grid "
                          "(e.g. {loop.lam: [0, 0.5, 1]}) or use `stabfw run`")
    if resume and force:
        raise ConfigError("--resume continues cells and --force recomputes them; give one")
    check_backend_args(backend or cfg.sweep.backend,
                       cfg.sweep.workers if workers is None else workers,
                       address or cfg.sweep.address)
    cells = expand_grid(cfg)
    out = ensure_dir(Path(out).resolve())
    with RunLock(out):
        clean_temp_files(out)
        return _run_cells(cfg, cells, out, backend, workers, address, resume, force, progress)


def _run_cells(cfg, cells, out, backend, workers, address, resume, force, progress):
    progress = cfg.output.progress if progress is None else progress
    result = SweepResult(out=out, cells=cells)
    t0 = time.perf_counter()

    pending, states = [], {}
    for cell in cells:
        cell_dir = out / "cells" / cell.name
        states[cell.name] = cell_state(cell_dir, cell.config) if not force else "replace"
        if states[cell.name] == "finished":
            summary = read_json(cell_dir / "summary.json")
            result.results[cell.name] = CellResult(cell.name, "skipped", summary=summary)
            continue
        pending.append(cell)
    others = [c.name for c in pending if states[c.name] == "other"]
    if others:  # a finished run is never overwritten without --force
        raise RunDirError(
            f"{len(others)} cell director{'ies' if len(others) > 1 else 'y'} of {out} "
            f"hold{'' if len(others) > 1 else 's'} a "
            f"finished run of another configuration: {', '.join(others[:8])}"
            f"{' …' if len(others) > 8 else ''}. Nothing was run or changed. Use --force to "
            "replace them, or another output directory (--out)", out)
    if result.results:
        log.info("%d of %d cells already finished; skipping them", len(result.results), len(cells))

    runner = make_backend(backend or cfg.sweep.backend,
                          cfg.sweep.workers if workers is None else workers,
                          address or cfg.sweep.address, n_tasks=len(pending))
    result.backend = runner.name
    parallel = runner.name != "serial"
    needed = metric_references(cfg)
    tasks = []
    for cell in pending:
        config = cell.config.model_copy(deep=True)
        # a worker's own progress bar would garble the sweep's
        config.output.progress = config.output.progress and not parallel and progress
        if parallel and config.loop.workers > 1:  # cells in parallel already: no nesting
            config.loop.workers = 1
        state = states[cell.name]
        restart = state == "replace" or (state == "unfinished" and not resume)
        if state == "unfinished" and not resume:
            log.info("cell %s was interrupted; computing it again (--resume continues it)",
                     cell.name)
        tasks.append({"name": cell.name, "config": config,
                      "dir": str(out / "cells" / cell.name), "resume": resume and not restart,
                      "force": restart, "metrics": needed,
                      "registration": _domain_registration(cell.config.domain.name)})

    if tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=f"sweep ({runner.name})", unit="cell",
                   disable=not progress)
        try:
            for res in runner.map(run_cell, tasks):
                result.results[res["name"]] = CellResult(res["name"], res["status"],
                                                         res["seconds"], res.get("error"),
                                                         res.get("summary"))
                if res["status"] == "failed":
                    log.error("cell %s failed: %s", res["name"], res["error"])
                bar.set_postfix_str(res["name"], refresh=False)
                bar.update(1)
        finally:
            bar.close()
    result.seconds = time.perf_counter() - t0
    write_outputs(cfg, result)
    return result


# --- outputs ------------------------------------------------------------------------
def write_outputs(cfg: RunConfig, result: SweepResult) -> None:
    """Write ``index.json``, ``aggregates.csv``, the combined plots and the HTML report."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for cell in result.cells:
        r = result.results.get(cell.name)
        entries.append({
            "cell": cell.name,
            "dir": f"cells/{cell.name}",
            "overrides": cell.overrides,
            "status": r.status if r else "missing",
            "seconds": round(r.seconds, 3) if r else None,
            "error": (r.error.strip() if r and r.error else None),
        })
    index = {"config": cfg.to_dict(), "grid": cfg.sweep.grid,
             "backend": result.backend, "seconds": round(result.seconds, 3), "cells": entries}
    write_json(out / "index.json", index)
    aggregates(result).to_csv(out / "aggregates.csv", index=False, float_format="%.10g")
    long_results(result).to_csv(out / "results.csv", index=False, float_format="%.10g")

    if not any(r.status != "failed" for r in result.results.values()):
        return
    headline = write_headline(cfg, result)
    try:
        found = write_stability(out, cfg.sweep, plots=cfg.output.report)
        if headline is not None:
            write_json(out / "stability.json", {**found, "headline": headline})
    except Exception as err:  # a diagram must not lose a finished sweep's index
        log.error("the stability diagram of %s failed: %s: %s", out, type(err).__name__, err)
        log.debug("the stability diagram's traceback", exc_info=True)
    if not cfg.output.report:
        return
    plot_runs(result.trajectories(), out / "report.png",
              title=f"{cfg.domain.name}: sweep over " + ", ".join(cfg.sweep.grid))
    write_report(out)


def write_headline(cfg: RunConfig, result: SweepResult) -> dict[str, Any] | None:
    """The sweep's headline over ``loop.lam`` (one row per finished cell with an
    analysis), written to ``summary.json`` and ``headline.png``; None when λ is not swept
    or no cell has an analysis."""
    if "loop.lam" not in cfg.sweep.grid:
        return None
    cells = []
    for cell in result.cells:
        r = result.results.get(cell.name)
        analysis = ((r.summary if r else None) or {}).get("analysis")
        if r is None or r.status == "failed" or not analysis:
            continue
        cells.append((float(cell.config.loop.lam), analysis))
    if not cells:
        return None
    o = (cfg.analysis.headline if cfg.analysis is not None else None) or HeadlineOptions()
    headline = sweep_headline(cells, **headline_options(o, cfg))
    write_json(result.out / "summary.json", {"headline": headline})
    if cfg.output.report:
        plot_headline(headline, result.out / "headline.png",
                      title=f"{cfg.domain.name}: {cfg.loop.policy}, sweep over λ")
    return headline


def long_results(result: SweepResult):
    """One row per (cell, seed, generation) of every finished cell: ``cell``, the swept
    values as columns, then the cell's metrics table — ``pandas.read_csv(OUT/results.csv)``
    is the whole sweep in one long table."""
    import pandas as pd

    frames = []
    trajectories = result.trajectories()
    for cell in result.cells:
        if cell.name not in trajectories:
            continue
        m = trajectories[cell.name].metrics
        front = pd.DataFrame({"cell": cell.name, **{k: [v] * len(m) for k, v in
                                                      cell.overrides.items()}}, index=m.index)
        frames.append(pd.concat([front, m.drop(columns=[c for c in cell.overrides
                                                        if c in m.columns])], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"cell": []})


def aggregates(result: SweepResult):
    """One row per cell: swept values, status, last-generation statistics and the scalar
    analyzer results found in the cell's ``summary.json``."""
    import pandas as pd

    rows = []
    for cell in result.cells:
        r = result.results.get(cell.name)
        row: dict[str, Any] = {"cell": cell.name, **cell.overrides,
                               "status": r.status if r else "missing"}
        summary = (r.summary if r else None) or {}
        for metric, stats in (summary.get("metrics") or {}).items():
            for stat, v in (stats or {}).items():
                row[f"{metric}.{stat}"] = v
        if summary.get("analysis") is not None:
            row.update(flatten(summary["analysis"], "analysis"))
        rows.append(row)
    return pd.DataFrame(rows)
