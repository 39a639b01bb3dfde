"""Stability diagrams of a sweep: the critical value λ* with its uncertainty, heat maps,
and ρ(J) against λ beside the Theorem 1 curve.

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
    the fixed-point analyzer's verdict: 0 for converged / stationary-noise, 1 for
    collapsing / diverging / oscillating.

The critical value of a swept axis is where the quantity crosses a threshold, found by
linear interpolation between the two grid points that bracket the crossing, in a chosen
coordinate (``xscale``); the standard error follows from the two cells' standard errors
by the delta method. For verdicts it is the bracket's midpoint, ± half the bracket.

References
----------
Bertrand et al., "On the Stability of Iterative Retraining of Generative Models on their
own Data", ICLR 2024 (Theorem 1: the local contraction rate ρ(λ)).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabfw.config import ConfigError

__all__ = [
    "CriticalValue",
    "cell_table",
    "critical_from_labels",
    "critical_value",
    "find_critical",
    "load_sweep",
    "plot_crossing",
    "plot_heatmap",
    "plot_rho_vs_lambda",
    "validate_spec",
    "write_stability",
]

log = logging.getLogger(__name__)

XSCALES = ("auto", "linear", "log", "inverse", "lam")
_SPEC_KEYS = {"axis", "quantity", "threshold", "xscale", "heatmap", "heatmap_axes"}
_STABLE = {"converged", "stationary-noise", "stationary_noise", "stable"}
_UNSTABLE = {"collapsing", "diverging", "oscillating", "unstable"}


# --- coordinates --------------------------------------------------------------------
def _forward(x: np.ndarray, scale: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == "linear":
            return x
        if scale == "log":
            return np.log(x)
        if scale == "inverse":
            return np.where(np.isinf(x), 0.0, 1.0 / x)
        if scale == "lam":  # λ ↦ λ/(1+λ) ∈ [0, 1]: the synthetic share; ∞ ↦ 1
            return np.where(np.isinf(x), 1.0, x / (1.0 + x))
    raise ValueError(f"xscale must be one of {', '.join(XSCALES[1:])}, got {scale!r}")


def _inverse(u: float, scale: str) -> float:
    if scale == "linear":
        return u
    if scale == "log":
        return math.exp(u)
    if scale == "inverse":
        return math.inf if u == 0 else 1.0 / u
    return math.inf if u >= 1 else u / (1.0 - u)


def _dx_du(u: float, scale: str) -> float:
    if scale == "linear":
        return 1.0
    if scale == "log":
        return math.exp(u)
    if scale == "inverse":
        return math.inf if u == 0 else 1.0 / u**2
    return math.inf if u >= 1 else 1.0 / (1.0 - u) ** 2


def resolve_xscale(axis: str, xscale: str = "auto") -> str:
    """``auto`` is ``lam`` (λ/(1+λ), so λ = ∞ has a place) for ``loop.lam``, else linear."""
    if xscale == "auto":
        return "lam" if axis == "loop.lam" else "linear"
    if xscale not in XSCALES:
        raise ConfigError(f"sweep.stability.xscale: must be one of {', '.join(XSCALES)}, "
                          f"got {xscale!r}")
    return xscale


# --- critical values ----------------------------------------------------------------
@dataclass
class CriticalValue:
    """Where a quantity crosses a threshold along one swept axis.

    Attributes
    ----------
    value : float or None
        The critical value (None when the quantity stays on one side over the grid).
    stderr : float
        Its standard error (delta method; for verdicts, half the bracket / √3).
    bracket : (float, float) or None
        The two grid values between which the crossing lies.
    status : str
        ``crossing``, ``multiple`` (the first crossing is reported), ``below`` or
        ``above`` (no crossing: the quantity stays below / above the threshold).
    axis, quantity, threshold, xscale : the question asked
    group : dict
        The values of the other swept axes this curve belongs to.
    crossings : list of float
        Every crossing found (several when the quantity is not monotone).
    """

    value: float | None
    stderr: float
    bracket: tuple[float, float] | None
    status: str
    axis: str = ""
    quantity: str = ""
    threshold: float = 1.0
    xscale: str = "linear"
    group: dict[str, Any] = field(default_factory=dict)
    crossings: list[float] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people, e.g. ``loop.lam* = 0.52 ± 0.03 (between 0.5 and 0.6)``."""
        name = self.axis.split(".")[-1] + "*"
        where = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.group.items())
        where = f" [{where}]" if where else ""
        if self.value is None:
            side = "below" if self.status == "below" else "above"
            return (f"{name}: no crossing — {self.quantity} stays {side} {self.threshold:g} over "
                    f"the grid{where}")
        lo, hi = self.bracket or (math.nan, math.nan)
        return (f"{name} = {self.value:.4g} ± {self.stderr:.2g} (between {lo:g} and {hi:g}; "
                f"{self.quantity} = {self.threshold:g}){where}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (∞ as the string ``"inf"``)."""
        d = asdict(self)
        return json.loads(json.dumps(d, default=str).replace("Infinity", '"inf"'))


def critical_value(
    x: Sequence[float],
    y: Sequence[float],
    stderr: Sequence[float] | None = None,
    threshold: float = 1.0,
    xscale: str = "linear",
) -> CriticalValue:
    """Where ``y(x)`` crosses ``threshold``, with the standard error of that point.

    The crossing is interpolated linearly between the bracketing grid points in the
    coordinate ``u = f(x)`` given by ``xscale`` (``linear``, ``log``, ``inverse`` = 1/x,
    ``lam`` = x/(1+x)); pick the one in which ``y`` is closest to linear. With
    ``d = y − threshold`` on the bracket ``(u₀, u₁)``, ``u* = u₀ + d₀ (u₁ − u₀)/(d₀ − d₁)`` and

        Var u* = (u₁ − u₀)² (d₁² s₀² + d₀² s₁²) / (d₀ − d₁)⁴,

    mapped back to x by the derivative of f⁻¹.

    Parameters
    ----------
    x : grid values (any order; ``inf`` allowed for ``inverse`` and ``lam``)
    y : the quantity's mean at each grid value
    stderr : its standard errors (default 0)
    threshold : float
    xscale : str

    Returns
    -------
    CriticalValue

    References
    ----------
    Delta method: Casella & Berger, *Statistical Inference*, 2nd ed., 2002, §5.5.4.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    s = np.zeros_like(y) if stderr is None else np.nan_to_num(np.asarray(stderr, float))
    u = _forward(x, xscale)
    keep = np.isfinite(u) & np.isfinite(y)
    x, y, s, u = x[keep], y[keep], s[keep], u[keep]
    order = np.argsort(u, kind="stable")
    if _forward(np.array([1.0, 2.0]), xscale)[1] < _forward(np.array([1.0]), xscale)[0]:
        order = order[::-1]  # walk in increasing x
    x, y, s, u = x[order], y[order], s[order], u[order]
    d = y - threshold
    found: list[tuple[float, float, tuple[float, float]]] = []
    for i in range(len(d) - 1):
        if d[i] == 0:
            found.append((x[i], _exact_se(u, d, s, i, xscale), (x[i], x[i])))
        elif d[i] * d[i + 1] < 0:
            du, dd = u[i + 1] - u[i], d[i] - d[i + 1]
            ustar = u[i] + d[i] * du / dd
            var_u = du**2 * (d[i + 1] ** 2 * s[i] ** 2 + d[i] ** 2 * s[i + 1] ** 2) / dd**4
            se = abs(_dx_du(ustar, xscale)) * math.sqrt(var_u)
            found.append((_inverse(ustar, xscale), se, (x[i], x[i + 1])))
    if len(d) and d[-1] == 0 and not found:
        found.append((x[-1], 0.0, (x[-1], x[-1])))
    if not found:
        status = "below" if len(d) and np.all(d < 0) else "above"
        return CriticalValue(None, math.nan, None, status, threshold=threshold, xscale=xscale)
    value, se, bracket = found[0]
    return CriticalValue(float(value), float(se), (float(bracket[0]), float(bracket[1])),
                         "crossing" if len(found) == 1 else "multiple", threshold=threshold,
                         xscale=xscale, crossings=[float(f[0]) for f in found])


def _exact_se(u, d, s, i, xscale) -> float:
    """Standard error of a crossing that falls on a grid point: the local slope's."""
    j = i + 1 if i + 1 < len(u) else i - 1
    slope = (d[j] - d[i]) / (u[j] - u[i]) if u[j] != u[i] else math.inf
    return abs(_dx_du(u[i], xscale)) * (s[i] / abs(slope) if slope else math.inf)


def critical_from_labels(
    x: Sequence[float], unstable: Sequence[bool], xscale: str = "linear"
) -> CriticalValue:
    """The first change from stable to unstable along ``x``: the bracket's midpoint (in
    the ``xscale`` coordinate) ± half the bracket (reported as stderr = half-width/√3,
    a uniform distribution over the bracket)."""
    x = np.asarray(x, dtype=float)
    lab = np.asarray(unstable, dtype=bool)
    u = _forward(x, xscale)
    order = np.argsort(u, kind="stable")
    if _forward(np.array([1.0, 2.0]), xscale)[1] < _forward(np.array([1.0]), xscale)[0]:
        order = order[::-1]
    x, lab, u = x[order], lab[order], u[order]
    changes = [i for i in range(len(lab) - 1) if lab[i] != lab[i + 1]]
    if not changes:
        return CriticalValue(None, math.nan, None, "above" if lab.all() else "below",
                             threshold=0.5, xscale=xscale)
    i = changes[0]
    mid = 0.5 * (u[i] + u[i + 1])
    half = abs(_inverse(u[i + 1], xscale) - _inverse(u[i], xscale)) / 2
    return CriticalValue(float(_inverse(mid, xscale)), float(half / math.sqrt(3)),
                         (float(x[i]), float(x[i + 1])),
                         "crossing" if len(changes) == 1 else "multiple", threshold=0.5,
                         xscale=xscale,
                         crossings=[float(_inverse(0.5 * (u[j] + u[j + 1]), xscale))
                                    for j in changes])


# --- per-cell quantities ------------------------------------------------------------
def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """A sweep directory's ``index.json`` (with ``dir`` made absolute)."""
    sweep_dir = Path(sweep_dir)
    index_path = sweep_dir / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no index.json; is this a stabfw sweep directory?")
    index = json.loads(index_path.read_text())
    for c in index["cells"]:
        c["path"] = sweep_dir / c["dir"]
        c["overrides"] = {k: _number(v) for k, v in c["overrides"].items()}
    return index


def _number(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in {"inf", "infinity", "+inf", ".inf", "+.inf"}:
        return math.inf
    return v


def _flat_analysis(summary: dict[str, Any]) -> dict[str, Any]:
    from stabfw.sweep import _flatten

    flat: dict[str, Any] = {}
    if summary.get("analysis") is not None:
        _flatten("", summary["analysis"], flat)
    return flat


def _parse_quantity(quantity: str) -> tuple[str, str]:
    kind, _, arg = quantity.partition(":")
    if kind == "verdict" and not arg:
        return kind, ""
    if kind not in ("final", "drift", "rate", "analysis") or not arg:
        raise ConfigError(
            f"sweep.stability.quantity: {quantity!r} is not a quantity; use final:<metric>, "
            "drift:<metric>, rate:<metric>, analysis:<dotted key> or verdict")
    return kind, arg


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
    summary = json.loads((run_dir / "summary.json").read_text())
    flat = _flat_analysis(summary)
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
    kind, arg = _parse_quantity(quantity)
    rows = []
    for c in index["cells"]:
        if c.get("status") == "failed" or not (Path(c["path"]) / "metrics.csv").is_file():
            continue
        mean, se, n = _cell_value(c, kind, arg)
        rows.append({"cell": c["cell"], **c["overrides"], "value": mean, "stderr": se, "n": n})
    return pd.DataFrame(rows)


def _groups(table: pd.DataFrame, axes: list[str]):
    if not axes:
        yield {}, table
        return
    keyed = table.assign(**{f"__{a}": table[a].map(_key) for a in axes})
    for keys, sub in keyed.groupby([f"__{a}" for a in axes], sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        yield {a: sub[a].iloc[0] for a in axes}, sub.drop(columns=[f"__{a}" for a in axes])


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def find_critical(
    sweep_dir: str | Path,
    axis: str = "loop.lam",
    quantity: str = "verdict",
    threshold: float = 1.0,
    xscale: str = "auto",
) -> list[CriticalValue]:
    """The critical value of ``axis`` for each combination of the other swept axes.

    Parameters
    ----------
    sweep_dir : a sweep directory
    axis : the swept config path to cross along (numeric values)
    quantity : see the module docstring
    threshold : where the quantity changes regime (ignored for ``verdict``)
    xscale : interpolation coordinate (``auto``: λ/(1+λ) for ``loop.lam``, else linear)
    """
    table = cell_table(sweep_dir, quantity)
    if table.empty:
        return []
    if axis not in table.columns:
        raise ConfigError(f"sweep.stability.axis: {axis!r} is not a swept axis; swept: "
                          f"{', '.join(c for c in table.columns if '.' in c)}")
    scale = resolve_xscale(axis, xscale)
    others = [c for c in table.columns if "." in c and c != axis]
    out = []
    for group, sub in _groups(table, others):
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


# --- plots --------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "∞" if math.isinf(v) else f"{v:g}"
    return str(v)


def _is_numeric(values) -> bool:
    try:
        np.asarray([_number(v) for v in values], dtype=float)
        return True
    except (TypeError, ValueError):
        return False


def plot_crossing(sweep_dir, axis, quantity, path, threshold=None, xscale="auto",
                  critical: list[CriticalValue] | None = None) -> Path:
    """The quantity (mean ± standard error over seeds) along ``axis``, one line per
    combination of the other axes, with the threshold and each λ* ± its standard error."""
    plt = _plt()
    table = cell_table(sweep_dir, quantity)
    scale = resolve_xscale(axis, xscale)
    others = [c for c in table.columns if "." in c and c != axis]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = list(_groups(table, others))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(groups), 1)))
    ticks: dict[float, str] = {}
    for color, (group, sub) in zip(colors, groups):
        x = pd.to_numeric(sub[axis]).to_numpy(float)
        u = _forward(x, scale)
        order = np.argsort(u)
        label = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in group.items()) or None
        ax.errorbar(u[order], sub["value"].to_numpy(float)[order],
                    yerr=np.nan_to_num(sub["stderr"].to_numpy(float)[order]), color=color,
                    marker="o", ms=4, capsize=3, lw=1.5, label=label)
        ticks.update({float(ui): _fmt(float(xi)) for ui, xi in zip(u, x)})
        for cv in critical or []:
            if cv.group == group and cv.value is not None:
                uc = float(_forward(np.array([cv.value]), scale)[0])
                ax.axvline(uc, color=color, ls=":", lw=1.2)
                lo = _forward(np.array([max(cv.value - cv.stderr, 0)]), scale)[0]
                hi = _forward(np.array([cv.value + cv.stderr]), scale)[0]
                ax.axvspan(min(lo, hi), max(lo, hi), color=color, alpha=0.15, lw=0)
    if threshold is not None and quantity != "verdict":
        ax.axhline(threshold, color="crimson", lw=1, ls="--", label=f"threshold {threshold:g}")
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    if _forward(np.array([1.0, 2.0]), scale)[1] < _forward(np.array([1.0]), scale)[0]:
        ax.invert_xaxis()
    ax.set_xlabel(f"{axis}" + ("" if scale == "linear" else f"  (spaced as {_SCALE_NAME[scale]})"))
    ax.set_ylabel(quantity + ("  (0 stable, 1 unstable)" if quantity == "verdict" else ""))
    crit = [cv for cv in critical or [] if cv.value is not None]
    title = "; ".join(cv.describe().split(" (")[0] for cv in crit[:3]) or f"{quantity} along {axis}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.text(0.99, 0.005, "mean over seeds ± standard error", ha="right", fontsize=7,
             color="gray")
    return _save(fig, path)


_SCALE_NAME = {"lam": "λ/(1+λ)", "inverse": "1/x", "log": "log x", "linear": "x"}


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_heatmap(sweep_dir, x_axis: str, y_axis: str, quantity: str, path) -> Path:
    """Heat maps of a quantity (mean over seeds) over two swept axes, one panel per
    combination of any further axes (at most 6). A logarithmic colour scale is used when
    the values are positive and span more than two decades."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    table = cell_table(sweep_dir, quantity)
    others = [c for c in table.columns if "." in c and c not in (x_axis, y_axis)]
    groups = list(_groups(table, others))[:6]
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (group, sub) in zip(axes.flat, groups):
        xs = _ordered(sub[x_axis])
        ys = _ordered(sub[y_axis])
        grid = np.full((len(ys), len(xs)), np.nan)
        for _, r in sub.iterrows():
            grid[ys.index(_key(r[y_axis])), xs.index(_key(r[x_axis]))] = r["value"]
        finite = grid[np.isfinite(grid)]
        norm = None
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
            norm = LogNorm(finite.min(), finite.max())
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="magma", norm=norm)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                frac = im.norm(v)
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="black" if frac > 0.6 else "white")
        ax.set_xticks(range(len(xs)), [_fmt(_number(json.loads(k))) for k in xs], fontsize=8)
        ax.set_yticks(range(len(ys)), [_fmt(_number(json.loads(k))) for k in ys], fontsize=8)
        ax.set_xlabel(x_axis)
        ax.set_ylabel(y_axis)
        ax.set_title(", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in group.items())
                     or quantity, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.85, label=quantity)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if len(groups) > 1:
        fig.suptitle(quantity)
    return _save(fig, path)


def _ordered(col: pd.Series) -> list[str]:
    vals = list(dict.fromkeys(col.map(_key)))
    try:
        return sorted(vals, key=lambda k: float(_number(json.loads(k))))
    except (TypeError, ValueError):
        return vals


def _rho_key(flat: dict[str, Any]) -> str | None:
    hits = [k for k, v in flat.items() if k.endswith("spectral_radius") and isinstance(v, float)]
    return hits[0] if hits else None


def _constants(flat: dict[str, Any]) -> dict[str, float] | None:
    """α, L, ε as an analyzer recorded them (any nesting), or None."""
    names = {"alpha": ("alpha",), "lipschitz": ("L", "lipschitz", "lipschitz_L"),
             "eps": ("eps", "epsilon", "w1", "wasserstein")}
    found = {}
    for target, keys in names.items():
        for k in keys:
            hit = _find_key(flat, k)
            if hit is not None and isinstance(flat[hit], float):
                found[target] = flat[hit]
                break
    return found if "alpha" in found else None


def plot_rho_vs_lambda(sweep_dir, path) -> Path | None:
    """Measured ρ(J) against λ (from the cells' analyzer results) with Theorem 1's ρ(λ),
    drawn where the theorem's condition holds, with the constants α, L, ε an analyzer
    recorded (else ε = 0: ρ = λ/(1 − λ)).

    Returns None when no cell holds a spectral radius or ``loop.lam`` is not swept.

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 1 (via :func:`stabfw.bounds.theorem1_rate`).
    """
    index = load_sweep(sweep_dir)
    if "loop.lam" not in index["grid"]:
        return None
    points = []
    constants = None
    for c in index["cells"]:
        f = Path(c["path"]) / "summary.json"
        if not f.is_file():
            continue
        flat = _flat_analysis(json.loads(f.read_text()))
        key = _rho_key(flat)
        if key is None:
            continue
        rest = {k: v for k, v in c["overrides"].items() if k != "loop.lam"}
        points.append((float(c["overrides"]["loop.lam"]), flat[key], rest))
        constants = constants or _constants(flat)
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups: dict[str, list] = {}
    for lam, rho, rest in points:
        groups.setdefault(", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in rest.items()),
                          []).append((lam, rho))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(groups), 1)))
    for color, (label, pts) in zip(colors, groups.items()):
        pts.sort()
        u = _forward(np.array([p[0] for p in pts]), "lam")
        ax.plot(u, [p[1] for p in pts], "o-", color=color, label=f"measured ρ(J) {label}".strip())
    from stabfw.bounds import theorem1_rate

    const = {"alpha": 1.0, "lipschitz": 0.0, "eps": 0.0, **(constants or {})}
    share = np.linspace(0, 0.999, 400)
    lam = share / (1 - share)
    rho = np.asarray(theorem1_rate(lam, const["alpha"], const["lipschitz"], const["eps"]))
    ok = np.isfinite(rho) & (rho < 1)  # ρ < 1 exactly where the theorem's condition holds
    text = ("α={alpha:.3g}, L={lipschitz:.3g}, ε={eps:.3g}".format(**const)
            if constants else "ε = 0 (well-specified)")
    ax.plot(_forward(lam[ok], "lam"), rho[ok], color="crimson", lw=1.5,
            label=f"Theorem 1 bound ({text})")
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    lams = sorted({p[0] for p in points})
    ax.set_xticks(_forward(np.array(lams), "lam"), [_fmt(v) for v in lams], fontsize=8)
    ax.set_xlabel("λ (spaced as λ/(1+λ))")
    ax.set_ylabel("spectral radius ρ(J)")
    ax.set_ylim(0, max(1.3, max(p[1] for p in points) * 1.1))
    ax.set_title("local stability: ρ(J) < 1 is stable", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- the sweep's diagram ------------------------------------------------------------
def validate_spec(sweep_cfg, cfg=None) -> dict[str, Any]:
    """Check ``sweep.stability`` before any cell runs; return it with defaults filled in."""
    spec = dict(getattr(sweep_cfg, "stability", None) or {})
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"sweep.stability: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"accepted: {', '.join(sorted(_SPEC_KEYS))}")
    grid = list(sweep_cfg.grid)
    numeric = [k for k in grid if _is_numeric(sweep_cfg.grid[k])]
    axis = spec.get("axis") or ("loop.lam" if "loop.lam" in numeric else
                                (numeric[0] if numeric else None))
    if spec.get("axis") is not None:
        if axis not in grid:
            raise ConfigError(f"sweep.stability.axis: {axis!r} is not swept; swept: "
                              f"{', '.join(grid)}")
        if axis not in numeric:
            raise ConfigError(f"sweep.stability.axis: {axis!r} has non-numeric values "
                              f"{sweep_cfg.grid[axis]}; a critical value needs numbers")
    if "quantity" in spec:
        _parse_quantity(str(spec["quantity"]))
    if "heatmap" in spec:
        _parse_quantity(str(spec["heatmap"]))
    if "threshold" in spec and not isinstance(spec["threshold"], (int, float)):
        raise ConfigError(f"sweep.stability.threshold: must be a number, got "
                          f"{spec['threshold']!r}")
    resolve_xscale(axis or "", spec.get("xscale", "auto"))
    hx = spec.get("heatmap_axes")
    if hx is not None and (not isinstance(hx, list) or len(hx) != 2 or set(hx) - set(grid)):
        raise ConfigError(f"sweep.stability.heatmap_axes: must be two swept axes, got {hx!r}")
    spec["axis"] = axis
    return spec


def write_stability(sweep_dir: str | Path, sweep_cfg, plots: bool = True) -> dict[str, Any]:
    """Write ``stability.json`` and the diagrams (``stability.png``, ``heatmap.png``,
    ``rho_vs_lambda.png``; not with ``plots=False``) into a finished sweep directory;
    return what was found."""
    sweep_dir = Path(sweep_dir)
    spec = validate_spec(sweep_cfg)
    grid = sweep_cfg.grid
    axis = spec["axis"]
    # the quantity: what the user named, else an analyzer's ρ(J) or verdict when present
    quantity, threshold = spec.get("quantity"), spec.get("threshold")
    if quantity is None:
        quantity, threshold = _default_quantity(sweep_dir)
    threshold = 1.0 if threshold is None else float(threshold)
    found: dict[str, Any] = {"axis": axis, "quantity": quantity, "threshold": threshold,
                             "critical": [], "figures": []}
    if axis is not None and quantity is not None and len(grid[axis]) > 1:
        crit = find_critical(sweep_dir, axis, quantity, threshold, spec.get("xscale", "auto"))
        found["critical"] = [cv.to_dict() | {"text": cv.describe()} for cv in crit]
        if plots:
            plot_crossing(sweep_dir, axis, quantity, sweep_dir / "stability.png", threshold,
                          spec.get("xscale", "auto"), crit)
            found["figures"].append("stability.png")
    elif axis is not None and len(grid[axis]) > 1 and plots:
        plot_crossing(sweep_dir, axis, "final:dist_to_theta_star", sweep_dir / "stability.png")
        found["figures"].append("stability.png")
        found["note"] = ("no critical value: name sweep.stability.quantity and threshold, or "
                         "add an analysis: section whose results hold a spectral radius or verdict")
    multi = [k for k in grid if len(grid[k]) > 1]
    hx = spec.get("heatmap_axes") or ([axis] * (axis in multi) + [k for k in multi if k != axis])[:2]
    if plots and len(multi) >= 2 and all(k in multi for k in hx) and len(hx) == 2:
        hq = spec.get("heatmap", "final:dist_to_theta_star")
        plot_heatmap(sweep_dir, hx[0], hx[1], hq, sweep_dir / "heatmap.png")
        found["figures"].append("heatmap.png")
        found["heatmap"] = {"axes": hx, "quantity": hq}
    if plots and plot_rho_vs_lambda(sweep_dir, sweep_dir / "rho_vs_lambda.png") is not None:
        found["figures"].append("rho_vs_lambda.png")
    from stabfw.trajectory import write_json

    write_json(sweep_dir / "stability.json", found)
    return found


def _default_quantity(sweep_dir: Path) -> tuple[str | None, float | None]:
    for c in load_sweep(sweep_dir)["cells"]:
        f = Path(c["path"]) / "summary.json"
        if not f.is_file():
            continue
        flat = _flat_analysis(json.loads(f.read_text()))
        key = _rho_key(flat)
        if key is not None:
            return f"analysis:{key}", 1.0
        if _find_key(flat, "verdict") is not None:
            return "verdict", None
    return None, None
