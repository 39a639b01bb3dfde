"""Run a validated run file: one run, or one run per cell of its ``sweep:`` grid."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stabfw import registry
from stabfw.config import RunConfig, apply_overrides, parse_config
from stabfw.report import plot_runs
from stabfw.runner import run_loop
from stabfw.trajectory import Trajectory, write_json

__all__ = ["Cell", "expand_grid", "run_config", "run_single"]


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its directory name, its overrides and its config."""

    name: str
    overrides: dict[str, Any]
    config: RunConfig


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", str(v))


def expand_grid(cfg: RunConfig) -> list[Cell]:
    """The Cartesian product of ``cfg.sweep.grid``, each cell validated as a full config."""
    if cfg.sweep is None:
        return []
    base = cfg.to_dict()
    base.pop("sweep", None)
    keys = list(cfg.sweep.grid)
    cells = []
    for values in itertools.product(*(cfg.sweep.grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        name = ",".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in overrides.items())
        raw = apply_overrides(base, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                     for k, v in overrides.items()])
        cells.append(Cell(name, overrides, parse_config(raw)))
    return cells


def _record(cfg: RunConfig) -> dict[str, Any]:
    record = cfg.to_dict()
    record["domain"] = {"name": cfg.domain.name,
                        **registry.validate_params(cfg.domain.name, cfg.domain.params)}
    return record


def run_single(cfg: RunConfig, out: str | Path, resume: bool = False) -> Trajectory:
    """Run one config into ``out``: trajectory files, ``summary.json`` and ``report.png``."""
    out = Path(out)
    loop = registry.make(cfg.domain.name, **cfg.domain.params)
    traj = run_loop(loop, cfg.loop, out_dir=out, resume=resume,
                    progress=cfg.output.progress, record=_record(cfg))
    summary = traj.summary()
    summary["config"] = traj.config
    write_json(out / "summary.json", summary)
    if cfg.output.report:
        plot_runs({_label(cfg): traj}, out / "report.png",
                  title=f"{cfg.domain.name}: {cfg.loop.policy}, λ = {_fmt(cfg.loop.lam)}")
    return traj


def _label(cfg: RunConfig) -> str:
    return f"λ = {_fmt(cfg.loop.lam)}"


def _finished(cell_dir: Path, cfg: RunConfig) -> bool:
    summary = cell_dir / "summary.json"
    if not summary.is_file() or not (cell_dir / "metrics.csv").is_file():
        return False
    import json

    try:
        return json.loads(summary.read_text()).get("config") == _record(cfg)
    except (ValueError, OSError):
        return False


def run_config(cfg: RunConfig, out: str | Path, resume: bool = False) -> dict[str, Trajectory]:
    """Run a config file's run, or every cell of its sweep (serially, skipping finished cells).

    Returns the trajectories by label; a sweep also writes ``index.json`` and a combined
    ``report.png`` in ``out``.
    """
    out = Path(out)
    if cfg.sweep is None:
        return {_label(cfg): run_single(cfg, out, resume=resume)}
    runs: dict[str, Trajectory] = {}
    index = []
    for cell in expand_grid(cfg):
        cell_dir = out / "cells" / cell.name
        if _finished(cell_dir, cell.config):
            traj = Trajectory.load(cell_dir)
        else:
            traj = run_single(cell.config, cell_dir, resume=resume)
        runs[cell.name] = traj
        index.append({"cell": cell.name, "dir": str(cell_dir.relative_to(out)),
                      "overrides": cell.overrides})
    write_json(out / "index.json", {"config": cfg.to_dict(), "cells": index})
    if cfg.output.report:
        plot_runs(runs, out / "report.png", title=f"{cfg.domain.name}: sweep over "
                  + ", ".join(cfg.sweep.grid))
    return runs
