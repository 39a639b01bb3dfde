"""Sweeps: a grid over config fields, one ordinary run directory per cell.

A sweep directory holds::

    OUT/index.json        the sweep's config and one entry per cell (overrides, status, time)
    OUT/aggregates.csv    one row per cell: the swept values and last-generation statistics
    OUT/cells/<name>/     an ordinary run directory (resume or analyse it alone)
    OUT/report.png        metric curves of every cell
    OUT/stability.png     the stability diagram (see :mod:`stabfw.stability`)
    OUT/report.html       a self-contained page with all of the above

A re-run skips the cells whose run directory is finished for the same configuration, so
an interrupted sweep continues where it stopped and a grown grid only runs its new cells.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stabfw import registry
from stabfw.config import ConfigError, RunConfig, apply_overrides, parse_config
from stabfw.trajectory import Trajectory, write_json

__all__ = [
    "Cell",
    "CellResult",
    "SweepResult",
    "cell_identity",
    "expand_grid",
    "is_finished",
    "register_cli",
    "run_sweep",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its directory name, its overrides and its config."""

    name: str
    overrides: dict[str, Any]
    config: RunConfig


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


# --- grid ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return "-".join(f"{k}{_fmt(x)}" for k, x in v.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", str(v))


_INF = {"inf", ".inf", "+inf", "+.inf", "infinity"}


def _norm(v: Any) -> Any:
    """A grid value as the config reads it: the strings ``inf``/``.inf`` are ∞."""
    if isinstance(v, str) and v.strip().lower() in _INF:
        return math.inf
    return v


def _yaml_value(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where two would clash."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def expand_grid(cfg: RunConfig) -> list[Cell]:
    """The Cartesian product of ``cfg.sweep.grid``, each cell validated as a full config.

    Raises
    ------
    ConfigError
        When a cell's config is invalid (the message names the cell and the field) or two
        cells would share a directory name.
    """
    if cfg.sweep is None:
        return []
    base = cfg.to_dict()
    base.pop("sweep", None)
    base.get("output", {}).pop("dir", None)
    keys = list(cfg.sweep.grid)
    short = _short_keys(keys)
    cells: list[Cell] = []
    seen: dict[str, dict[str, Any]] = {}
    configs: dict[str, str] = {}
    grid = {k: [_norm(v) for v in vals] for k, vals in cfg.sweep.grid.items()}
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        name = ",".join(f"{short[k]}={_fmt(v)}" for k, v in overrides.items())
        if name in seen:
            raise ConfigError(f"sweep.grid: cells {seen[name]} and {overrides} would share the "
                              f"directory name {name!r}; remove the duplicate value")
        seen[name] = overrides
        raw = apply_overrides(base, [f"{k}={_yaml_value(v)}" for k, v in overrides.items()])
        try:
            cell_cfg = parse_config(raw)
        except ConfigError as err:
            raise ConfigError(f"sweep.grid cell {name} ({overrides}): {err}") from None
        ident = json.dumps(cell_cfg.to_dict(), sort_keys=True, default=str)
        if ident in configs:
            raise ConfigError(f"sweep.grid: cells {configs[ident]} and {name} are the same "
                              "configuration; remove the duplicate value")
        configs[ident] = name
        cells.append(Cell(name, overrides, cell_cfg))
    return cells


# --- finished cells -----------------------------------------------------------------
def cell_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a recorded config that decide a run's numbers (not ``output``/``sweep``)."""
    return {k: v for k, v in record.items() if k not in ("output", "sweep")}


def is_finished(run_dir: str | Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (same domain, loop and analysis)."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if not summary.is_file() or not (run_dir / "metrics.csv").is_file():
        return False
    try:
        recorded = json.loads(summary.read_text()).get("config") or {}
    except (ValueError, OSError):
        return False
    return cell_identity(recorded) == cell_identity(cfg.record())


# --- running ------------------------------------------------------------------------
def _domain_registration(name: str) -> tuple[str, str] | None:
    """A run-time registration a worker process must repeat (built-ins need none)."""
    entry = {e.name: e for e in registry.list_domains()}.get(name)
    builtin = {e.name for e in registry._BUILTINS}
    if entry is None or name in builtin:
        return None
    return entry.name, entry.target


def run_cell(task: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in the current process; what every backend calls (picklable).

    ``task`` holds ``name``, ``config`` (a :class:`RunConfig`), ``dir`` (absolute),
    ``resume`` and ``registration``. Returns a plain dict (status, seconds, summary or the
    error's traceback) so that a failing cell does not stop the others.
    """
    from stabfw.experiment import run_single

    t0 = time.perf_counter()
    try:
        reg = task.get("registration")
        if reg is not None and reg[0] not in registry._CLASSES:
            registry.register(reg[0], reg[1], overwrite=True)
        run_single(task["config"], task["dir"], resume=task.get("resume", False))
        summary = json.loads((Path(task["dir"]) / "summary.json").read_text())
        return {"name": task["name"], "status": "done", "seconds": time.perf_counter() - t0,
                "summary": summary}
    except Exception:
        return {"name": task["name"], "status": "failed", "seconds": time.perf_counter() - t0,
                "error": traceback.format_exc()}


def run_sweep(
    cfg: RunConfig,
    out: str | Path,
    backend: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
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
        Continue interrupted cells from their checkpoints.
    progress : bool, optional
        Show a progress bar over cells (default: ``output.progress``).

    Returns
    -------
    SweepResult
    """
    from stabfw.backends import make_backend

    if cfg.sweep is None:
        raise ConfigError("this config has no 'sweep:' section; add sweep.grid "
                          "(e.g. {loop.lam: [0, 0.5, 1]}) or use `stabfw run`")
    out = Path(out).resolve()
    cells = expand_grid(cfg)
    from stabfw import stability

    stability.validate_spec(cfg.sweep, cfg)
    progress = cfg.output.progress if progress is None else progress
    result = SweepResult(out=out, cells=cells)
    t0 = time.perf_counter()

    pending = []
    for cell in cells:
        cell_dir = out / "cells" / cell.name
        if is_finished(cell_dir, cell.config):
            summary = json.loads((cell_dir / "summary.json").read_text())
            result.results[cell.name] = CellResult(cell.name, "skipped", summary=summary)
            continue
        pending.append(cell)
    if result.results:
        log.info("%d of %d cells already finished; skipping them", len(result.results), len(cells))

    runner = make_backend(backend or cfg.sweep.backend,
                          cfg.sweep.workers if workers is None else workers,
                          address or cfg.sweep.address, n_tasks=len(pending))
    result.backend = runner.name
    parallel = runner.name != "serial"
    tasks = []
    for cell in pending:
        config = cell.config.model_copy(deep=True)
        # a worker's own progress bar would garble the sweep's
        config.output.progress = config.output.progress and not parallel and progress
        tasks.append({"name": cell.name, "config": config,
                      "dir": str(out / "cells" / cell.name), "resume": resume,
                      "registration": _domain_registration(cell.config.domain.name)})

    if tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=f"sweep ({runner.name})", unit="cell",
                   disable=not progress)
        for res in runner.map(run_cell, tasks):
            result.results[res["name"]] = CellResult(res["name"], res["status"], res["seconds"],
                                                     res.get("error"), res.get("summary"))
            if res["status"] == "failed":
                log.error("cell %s failed:\n%s", res["name"], res["error"])
            bar.set_postfix_str(res["name"], refresh=False)
            bar.update(1)
        bar.close()
    result.seconds = time.perf_counter() - t0
    write_outputs(cfg, result)
    return result


# --- outputs ------------------------------------------------------------------------
def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


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
            "overrides": {k: _json_value(v) for k, v in cell.overrides.items()},
            "status": r.status if r else "missing",
            "seconds": round(r.seconds, 3) if r else None,
            "error": (r.error.strip().splitlines()[-1] if r and r.error else None),
        })
    config = cfg.to_dict()
    # model_dump(mode="json") writes ∞ as null; keep the grid's own values
    config["sweep"]["grid"] = {k: [_norm(v) for v in vals] for k, vals in cfg.sweep.grid.items()}
    index = {"config": config, "grid": {k: [_json_value(_norm(v)) for v in vals]
                                        for k, vals in cfg.sweep.grid.items()},
             "backend": result.backend, "seconds": round(result.seconds, 3), "cells": entries}
    write_json(out / "index.json", index)
    aggregates(result).to_csv(out / "aggregates.csv", index=False, float_format="%.10g")

    if not any(r.status != "failed" for r in result.results.values()):
        return
    from stabfw import stability

    try:
        stability.write_stability(out, cfg.sweep, plots=cfg.output.report)
    except Exception:  # a diagram must not lose a finished sweep's index
        log.exception("the stability diagram of %s failed", out)
    if not cfg.output.report:
        return
    from stabfw.report import plot_runs

    plot_runs(result.trajectories(), out / "report.png",
              title=f"{cfg.domain.name}: sweep over " + ", ".join(cfg.sweep.grid))
    from stabfw.html_report import write_report

    write_report(out)


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, into)
    elif isinstance(value, (bool, str)) or value is None:
        into[prefix] = value
    elif isinstance(value, (int, float, np.integer, np.floating)):
        into[prefix] = float(value)


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
            flat: dict[str, Any] = {}
            _flatten("analysis", summary["analysis"], flat)
            row.update(flat)
        rows.append(row)
    return pd.DataFrame(rows)


# --- command line -------------------------------------------------------------------
def cmd_sweep(args) -> int:
    """``stabfw sweep CONFIG``: run every cell of a sweep config."""
    from stabfw.cli import _default_out
    from stabfw.config import load_config

    cfg = load_config(args.config, args.set)
    if cfg.sweep is None:
        raise ConfigError(f"{args.config} has no 'sweep:' section; add sweep.grid "
                          "(e.g. {loop.lam: [0, 0.5, 1]}) or use `stabfw run`")
    out = Path(args.out or cfg.output.dir or _default_out(args.config))
    res = run_sweep(cfg, out, backend=args.backend, workers=args.workers,
                    address=args.address, resume=args.resume)
    n_skip = sum(r.status == "skipped" for r in res.results.values())
    print(f"wrote {out}/ ({len(res.cells)} cells, {n_skip} already finished, "
          f"backend {res.backend}, {res.seconds:.1f} s); report: {out / 'report.html'}")
    if res.failed:
        print(f"{len(res.failed)} cell(s) failed: {', '.join(res.failed)} "
              f"(tracebacks in the log above; re-run to retry them)")
        return 1
    return 0


def register_cli(sub) -> None:
    """Add ``stabfw sweep`` to the CLI's subparsers."""
    p = sub.add_parser("sweep", help="run every cell of a config's sweep: grid")
    p.add_argument("config")
    p.add_argument("--backend", choices=["auto", "serial", "local", "ray"],
                   help="where cells run (default: sweep.backend, else auto = local if joblib "
                        "is installed)")
    p.add_argument("--workers", type=int, help="parallel workers (default: one per core)")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--out", help="sweep directory (default: output.dir or runs/<config name>)")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted cells from their checkpoints")
    p.set_defaults(func=cmd_sweep)
