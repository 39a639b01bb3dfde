"""Stability diagrams of a sweep, as data: per-cell quantities, the critical value of a
swept axis, and the points of ρ(J) against λ (the figures are drawn by
:mod:`stabfw.reporting.figures` from these tables).

A *quantity* is measured in every cell, as a mean over seeds with its standard error:

``final:<metric>``
    the metric at the last generation;
``drift:<metric>``
    its mean change per generation, ``(m_T − m_0)/T``;
``rate:<metric>``
    its geometric per-generation factor, ``exp(E[log(m_T/m_s)]/(T − s))`` (s = 1 for
    ``dist_to_theta_star``, which is 0 at generation 0, else s = 0);
``analysis:<dotted.key>``
    a scalar an analyzer wrote under ``analysis`` in the cell's ``summary.json`` (e.g. a
    spectral radius); its standard error is read from ``<key>_stderr`` when present;
``verdict``
    the fixed-point analyzer's verdict: 0 for converged / stationary_noise, 1 for
    collapsing / diverging / oscillating.

The critical value of a swept axis is where the quantity crosses a threshold
(:func:`stabfw.analysis.critical.critical_value`: linear interpolation between the two grid
points that bracket the crossing, in a chosen coordinate, with the delta-method standard
error; for verdicts the bracket's midpoint).

References
----------
Bertrand et al., "On the Stability of Iterative Retraining of Generative Models on their
own Data", ICLR 2024 (Theorem 1: the local contraction rate ρ(λ)).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabfw._util.jsonio import flatten, read_json, write_json
from stabfw._util.numbers import fmt, parse_inf
from stabfw._util.tables import group_rows, other_axes
from stabfw.analysis.bounds import theorem1_rate
from stabfw.analysis.critical import (
    CriticalValue,
    critical_from_labels,
    critical_value,
    resolve_xscale,
)
from stabfw.errors import ConfigError
from stabfw.reporting.figures import plot_crossing, plot_heatmap, plot_rho_vs_lambda
from stabfw.run.config import StabilityOptions, SweepConfig, parse_quantity

__all__ = [
    "cell_table",
    "find_critical",
    "load_sweep",
    "rho_points",
    "write_stability",
]

_STABLE = {"converged", "stationary_noise", "stationary-noise", "stable"}
_UNSTABLE = {"collapsing", "diverging", "oscillating", "unstable"}


# --- per-cell quantities ------------------------------------------------------------
def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """A sweep directory's ``index.json`` (with ``path`` made absolute)."""
    sweep_dir = Path(sweep_dir)
    index_path = sweep_dir / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no index.json; is this a stabfw sweep directory?")
    index = read_json(index_path)
    for c in index["cells"]:
        c["path"] = sweep_dir / c["dir"]
        c["overrides"] = {k: parse_inf(v) for k, v in c["overrides"].items()}
    return index


def _flat_analysis(summary: dict[str, Any]) -> dict[str, Any]:
    return flatten(summary.get("analysis") or {})


def _metric_values(run_dir: Path, kind: str, metric: str) -> np.ndarray:
    """Per-seed values of a metric-based quantity in one run directory."""
    table = pd.read_csv(run_dir / "metrics.csv")
    if metric not in table.columns:
        have = [c for c in table.columns if c not in ("seed", "generation")]
        raise KeyError(f"{run_dir.name}: no metric {metric!r}; have {', '.join(have)}")
    T = int(table["generation"].max())
    wide = table.pivot(index="seed", columns="generation", values=metric)
    last = wide[T].to_numpy(float)
    if kind == "final":
        return last
    start = 1 if metric == "dist_to_theta_star" else 0
    if T <= start:
        raise ValueError(f"{run_dir.name}: {kind}:{metric} needs more than {start} generation(s)")
    first = wide[start].to_numpy(float)
    if kind == "drift":
        return (last - first) / (T - start)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(np.abs(last)) - np.log(np.abs(first))) / (T - start)


def _find_key(flat: dict[str, Any], key: str) -> str | None:
    if key in flat:
        return key
    hits = [k for k in flat if k == key or k.endswith("." + key)]
    return hits[0] if hits else None


def _cell_value(cell: dict[str, Any], kind: str, arg: str) -> tuple[float, float, int]:
    """(mean, standard error, number of seeds) of a quantity in one cell."""
    run_dir = Path(cell["path"])
    if kind in ("final", "drift", "rate"):
        v = _metric_values(run_dir, kind, arg)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return math.nan, math.nan, 0
        mean = float(v.mean())
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
        if kind == "rate":  # geometric factor; delta method for exp
            return math.exp(mean), math.exp(mean) * se, int(v.size)
        return mean, se, int(v.size)
    flat = _flat_analysis(read_json(run_dir / "summary.json"))
    if kind == "verdict":
        key = _find_key(flat, "verdict")
        if key is None:
            return math.nan, math.nan, 0
        verdict = str(flat[key]).lower()
        if verdict not in _STABLE | _UNSTABLE:
            return math.nan, math.nan, 0
        return float(verdict in _UNSTABLE), 0.0, 1
    key = _find_key(flat, arg)
    if key is None or not isinstance(flat[key], float):
        return math.nan, math.nan, 0
    se = math.nan
    for suffix in ("_stderr", "_se", ".stderr"):
        k2 = _find_key(flat, arg + suffix)
        if k2 is not None and isinstance(flat[k2], float):
            se = flat[k2]
            break
    return flat[key], se, 1


def cell_table(sweep_dir: str | Path, quantity: str) -> pd.DataFrame:
    """One row per finished cell: the swept values, ``value`` (mean over seeds),
    ``stderr`` and ``n`` for ``quantity``."""
    index = load_sweep(sweep_dir)
    try:
        kind, arg = parse_quantity(quantity)
    except ValueError as err:
        raise ConfigError(f"sweep.stability.quantity: {err}") from None
    rows = []
    for c in index["cells"]:
        if c.get("status") == "failed" or not (Path(c["path"]) / "metrics.csv").is_file():
            continue
        mean, se, n = _cell_value(c, kind, arg)
        rows.append({"cell": c["cell"], **c["overrides"], "value": mean, "stderr": se, "n": n})
    return pd.DataFrame(rows)


def find_critical(
    sweep_dir: str | Path,
    axis: str = "loop.lam",
    quantity: str = "verdict",
    threshold: float = 1.0,
    xscale: str = "auto",
    table: pd.DataFrame | None = None,
) -> list[CriticalValue]:
    """The critical value of ``axis`` for each combination of the other swept axes.

    Parameters
    ----------
    sweep_dir : a sweep directory
    axis : the swept config path to cross along (numeric values)
    quantity : see the module docstring
    threshold : where the quantity changes regime (ignored for ``verdict``)
    xscale : interpolation coordinate (``auto``: λ/(1+λ) for ``loop.lam``, else linear)
    table : the :func:`cell_table` of ``quantity``, when read already
    """
    table = cell_table(sweep_dir, quantity) if table is None else table
    if table.empty:
        return []
    if axis not in table.columns:
        raise ConfigError(f"sweep.stability.axis: {axis!r} is not a swept axis; swept: "
                          f"{', '.join(c for c in table.columns if '.' in c)}")
    scale = resolve_xscale(axis, xscale)
    out = []
    for group, sub in group_rows(table, other_axes(table, axis)):
        sub = sub[np.isfinite(sub["value"].to_numpy(float))]
        if sub.empty:
            continue
        x = pd.to_numeric(sub[axis], errors="raise").to_numpy(float)
        if quantity == "verdict":
            cv = critical_from_labels(x, sub["value"].to_numpy() > 0.5, scale)
        else:
            cv = critical_value(x, sub["value"].to_numpy(float), sub["stderr"].to_numpy(float),
                                threshold, scale)
        cv.axis, cv.quantity, cv.group = axis, quantity, dict(group)
        out.append(cv)
    return out


# --- ρ(J) against λ -------------------------------------------------------------------
def _rho_key(flat: dict[str, Any]) -> str | None:
    hits = [k for k, v in flat.items() if k.endswith("spectral_radius") and isinstance(v, float)]
    return hits[0] if hits else None


def _constants(flat: dict[str, Any]) -> dict[str, float] | None:
    """α, L, ε as an analyzer recorded them (any nesting), or None."""
    names = {"alpha": ("alpha",), "L": ("L", "lipschitz", "lipschitz_L"),
             "eps": ("eps", "epsilon", "w1", "wasserstein")}
    found = {}
    for target, keys in names.items():
        for k in keys:
            hit = _find_key(flat, k)
            if hit is not None and isinstance(flat[hit], float):
                found[target] = flat[hit]
                break
    return found if "alpha" in found else None


def rho_points(sweep_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The measured ρ(J) of every cell against λ, and Theorem 1's ρ(λ) beside it.

    Returns ``(points, theorem)`` — a table with columns ``lam``, ``rho`` and ``group``
    (the other swept values), and the Theorem-1 curve on the synthetic share λ/(1+λ) with
    the constants an analyzer recorded (else ε = 0: ρ = λ/(1 − λ)) — or None when no cell
    holds a spectral radius or ``loop.lam`` is not swept.
    """
    index = load_sweep(sweep_dir)
    if "loop.lam" not in index["grid"]:
        return None
    rows, constants = [], None
    for c in index["cells"]:
        f = Path(c["path"]) / "summary.json"
        if not f.is_file():
            continue
        flat = _flat_analysis(read_json(f))
        key = _rho_key(flat)
        if key is None:
            continue
        rest = {k: v for k, v in c["overrides"].items() if k != "loop.lam"}
        rows.append({"lam": float(c["overrides"]["loop.lam"]), "rho": flat[key],
                     "group": ", ".join(f"{k.split('.')[-1]}={fmt(v, 6)}"
                                        for k, v in rest.items())})
        constants = constants or _constants(flat)
    if not rows:
        return None
    const = {"alpha": 1.0, "L": 0.0, "eps": 0.0, **(constants or {})}
    share = np.linspace(0, 0.999, 400)
    lam = share / (1 - share)
    rate = np.asarray(theorem1_rate(lam, const["alpha"], const["L"], const["eps"]))
    ok = np.isfinite(rate) & (rate < 1)  # ρ < 1 exactly where the theorem's condition holds
    theorem = {**const, "estimated": constants is not None, "lam": lam[ok], "rate": rate[ok]}
    return pd.DataFrame(rows), theorem


# --- the sweep's diagram ------------------------------------------------------------
def _default_quantity(sweep_dir: Path) -> tuple[str | None, float | None]:
    for c in load_sweep(sweep_dir)["cells"]:
        f = Path(c["path"]) / "summary.json"
        if not f.is_file():
            continue
        flat = _flat_analysis(read_json(f))
        key = _rho_key(flat)
        if key is not None:
            return f"analysis:{key}", 1.0
        if _find_key(flat, "verdict") is not None:
            return "verdict", None
    return None, None


def write_stability(sweep_dir: str | Path, sweep_cfg: SweepConfig,
                    plots: bool = True) -> dict[str, Any]:
    """Write ``stability.json`` and the diagrams (``stability.png``, ``heatmap.png``,
    ``rho_vs_lambda.png``; not with ``plots=False``) into a finished sweep directory;
    return what was found."""
    sweep_dir = Path(sweep_dir)
    spec = sweep_cfg.stability or StabilityOptions()
    grid = sweep_cfg.grid
    axis = sweep_cfg.stability_axis()
    xscale = spec.xscale
    # the quantity: what the user named, else an analyzer's ρ(J) or verdict when present
    quantity, threshold = spec.quantity, spec.threshold
    if quantity is None:
        quantity, threshold = _default_quantity(sweep_dir)
    threshold = 1.0 if threshold is None else float(threshold)
    found: dict[str, Any] = {"axis": axis, "quantity": quantity, "threshold": threshold,
                             "critical": [], "figures": []}
    if axis is not None and len(grid[axis]) > 1:
        shown = quantity or "final:dist_to_theta_star"
        table = cell_table(sweep_dir, shown)
        crit = find_critical(sweep_dir, axis, quantity, threshold, xscale, table) \
            if quantity is not None else []
        found["critical"] = [cv.to_dict() | {"text": cv.describe()} for cv in crit]
        if quantity is None:
            found["note"] = ("no critical value: name sweep.stability.quantity and threshold, "
                             "or add an analysis: section whose results hold a spectral "
                             "radius or verdict")
        if plots:
            plot_crossing(table, axis, shown, sweep_dir / "stability.png",
                          threshold if quantity is not None else None, xscale, crit)
            found["figures"].append("stability.png")
    multi = [k for k in grid if len(grid[k]) > 1]
    hx = spec.heatmap_axes or ([axis] * (axis in multi) + [k for k in multi if k != axis])[:2]
    if plots and len(multi) >= 2 and all(k in multi for k in hx) and len(hx) == 2:
        hq = spec.heatmap or "final:dist_to_theta_star"
        plot_heatmap(cell_table(sweep_dir, hq), hx[0], hx[1], hq, sweep_dir / "heatmap.png")
        found["figures"].append("heatmap.png")
        found["heatmap"] = {"axes": hx, "quantity": hq}
    rho = rho_points(sweep_dir) if plots else None
    if rho is not None:
        plot_rho_vs_lambda(*rho, sweep_dir / "rho_vs_lambda.png")
        found["figures"].append("rho_vs_lambda.png")
    write_json(sweep_dir / "stability.json", found)
    return found
