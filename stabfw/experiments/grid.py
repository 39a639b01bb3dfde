"""A sweep's grid: the Cartesian product of ``sweep.grid``, one validated config per cell,
and whether a cell's run directory is finished already."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabfw._util.jsonio import read_json, to_jsonable
from stabfw._util.numbers import slug, yaml_scalar
from stabfw.errors import ConfigError
from stabfw.run.config import RetrainConfig, RunConfig, apply_overrides, parse_config
from stabfw.run.rundir import MANIFEST

__all__ = ["Cell", "cell_identity", "cell_state", "expand_grid", "is_finished", "short_keys"]


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its directory name, its overrides and its config."""

    name: str
    overrides: dict[str, Any]
    config: RunConfig


# --- grid ---------------------------------------------------------------------------
def short_keys(keys: list[str]) -> dict[str, str]:
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
    short = short_keys(keys)
    cells: list[Cell] = []
    seen: dict[str, dict[str, Any]] = {}
    configs: dict[str, str] = {}
    grid = cfg.sweep.grid  # ∞ already parsed by the schema
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        name = ",".join(f"{short[k]}={slug(v)}" for k, v in overrides.items())
        if name in seen:
            raise ConfigError(f"sweep.grid: cells {seen[name]} and {overrides} would share the "
                              f"directory name {name!r}; remove the duplicate value")
        seen[name] = overrides
        raw = apply_overrides(base, [f"{k}={yaml_scalar(v)}" for k, v in overrides.items()])
        try:
            cell_cfg = parse_config(raw)
        except ConfigError as err:
            raise ConfigError(f"sweep.grid cell {name} ({overrides}): {err}") from None
        ident = json.dumps(to_jsonable(cell_cfg.to_dict()), sort_keys=True)
        if ident in configs:
            raise ConfigError(f"sweep.grid: cells {configs[ident]} and {name} are the same "
                              "configuration; remove the duplicate value")
        configs[ident] = name
        cells.append(Cell(name, overrides, cell_cfg))
    return cells


# --- finished cells -----------------------------------------------------------------
def cell_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a recorded config that decide a run's numbers (not ``output``/``sweep``,
    nor where the loop computed: ``loop.workers``, ``loop.backend``, ``loop.address``)."""
    out = {k: v for k, v in record.items() if k not in ("output", "sweep")}
    if isinstance(out.get("loop"), dict):
        out["loop"] = {k: v for k, v in out["loop"].items()
                       if k not in RetrainConfig.EXECUTION_FIELDS}
    return out


def is_finished(run_dir: str | Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (same domain, loop and analysis):
    its manifest (the finished mark) and summary are there, and the summary's config is
    ``cfg``'s."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if not (summary.is_file() and (run_dir / "metrics.csv").is_file()
            and (run_dir / MANIFEST).is_file()):
        return False
    try:
        recorded = read_json(summary).get("config") or {}
    except (ValueError, OSError):
        return False
    return cell_identity(recorded) == cell_identity(cfg.record())




def cell_state(run_dir: str | Path, cfg: RunConfig) -> str:
    """What a cell's directory holds for ``cfg``.

    ``"empty"``; ``"finished"`` (a finished run of this config); ``"other"`` (a finished run
    of another config, or results stabfw cannot verify: never overwritten without
    ``force``); ``"unfinished"`` (a checkpoint, or a finished trajectory whose summary was
    never written).
    """
    run_dir = Path(run_dir)
    if is_finished(run_dir, cfg):
        return "finished"
    has_manifest = (run_dir / MANIFEST).is_file()
    if has_manifest and (run_dir / "summary.json").is_file():
        return "other"
    if not has_manifest and (run_dir / "params.npz").is_file():
        return "other"
    if has_manifest or ((run_dir / "checkpoint").is_dir() and any((run_dir / "checkpoint").iterdir())):
        return "unfinished"
    return "empty"
