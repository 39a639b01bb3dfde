"""Figures, fed tables and results (they never recompute): metric curves of runs,
analyzer results, and a sweep's stability diagrams."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.numbers import fmt
from stabfw._util.plotting import pyplot, save_figure
from stabfw._util.tables import group_rows, other_axes, value_key
from stabfw.analysis.critical import CriticalValue, resolve_xscale, to_coordinate
from stabfw.run.trajectory import Trajectory

__all__ = ["analysis_figure", "headline_figure", "integer_generations", "plot_analysis",
           "plot_crossing", "plot_headline", "plot_heatmap", "plot_rho_vs_lambda", "plot_runs",
           "runs_figure"]

# Bookkeeping columns that are not worth a panel of their own.
_SKIP = {"n_real", "n_synthetic"}


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        v = np.where(np.isfinite(values), values, np.nan)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (np.nanmedian(v, axis=0), np.nanquantile(v, 0.1, axis=0),
                    np.nanquantile(v, 0.9, axis=0))


#: Axis labels (with units) of the columns every run has.
_BUILTIN_LABELS = {"dist_to_theta_star": "‖θ_t − θ*‖ (units of θ, log scale)",
                   "n_real": "real samples", "n_synthetic": "synthetic samples",
                   "lam_effective": "λ realised (synthetic / real samples)"}


def _legend(ax: Any, **kw: Any) -> None:
    """``ax.legend(**kw)`` when something in ``ax`` is labelled (a panel of unlabelled
    points, e.g. a headline whose every ρ is not evidence, would make matplotlib warn)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def integer_generations(ax: Any) -> None:
    """Generation ticks at whole numbers only (a short run gets no 0.5, 1.5, …)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _metric_label(name: str, descriptions: Mapping[str, str] | None) -> str:
    import textwrap

    text = (descriptions or {}).get(name) or _BUILTIN_LABELS.get(name) or f"{name} (value)"
    return "\n".join(textwrap.wrap(text, 34))


def runs_figure(
    runs: Mapping[str, Trajectory],
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> Any:
    """The figure of :func:`plot_runs` (a matplotlib ``Figure``, not saved)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    first = next(iter(runs.values()))
    names = list(metrics) if metrics else [m for m in first.metric_names if m not in _SKIP]
    if descriptions is None:  # what the runner recorded of the domain's metric_info()
        descriptions = {k: (v or {}).get("description") for traj in runs.values()
                        for k, v in (traj.meta.get("metric_info") or {}).items()}
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(runs), 1)))
    for ax, name in zip(axes.flat, names):
        left_out = []
        for color, (label, traj) in zip(colors, runs.items()):
            if name not in traj.metrics.columns:
                continue
            values = traj.metric(name)
            gens = np.arange(values.shape[1])
            if name == "dist_to_theta_star":
                # log scale: leave out generation 0 (θ* itself) and exact zeros (λ = 0)
                values, gens = np.where(values[:, 1:] > 0, values[:, 1:], np.nan), gens[1:]
                if np.all(np.isnan(values)):
                    left_out.append(label)
                    continue
            med, lo, hi = _band(values)
            ax.plot(gens, med, color=color, lw=2, label=label)
            ax.fill_between(gens, lo, hi, color=color, alpha=0.2, lw=0)
        if name == "dist_to_theta_star" and ax.has_data():
            ax.set_yscale("log")
        if left_out:  # said on the panel, so a missing curve is not a mystery
            ax.text(0.02, 0.02, f"{', '.join(left_out)}: θ_t = θ* throughout (not on a log "
                    "scale)", transform=ax.transAxes, fontsize=7, color="gray")
        ax.set_title(name)
        ax.set_xlabel("generation")
        ax.set_ylabel(_metric_label(name, descriptions), fontsize=8)
        integer_generations(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    # one figure-level legend of every run, drawn from proxies: a run missing from one
    # panel (λ = 0 on the log-scale distance) is still named
    handles = [Line2D([], [], color=c, lw=2, label=label) for c, label in zip(colors, runs)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(runs), 6),
               bbox_to_anchor=(0.5, -0.01), frameon=False)
    n_seeds = first.seeds.size
    fig.suptitle(title or "", fontsize=13)
    fig.text(0.99, 0.005, f"median over {n_seeds} seeds, band: 10–90 %", ha="right",
             fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def plot_runs(
    runs: Mapping[str, Trajectory],
    path: str | Path,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> Path:
    """Write a PNG with one panel per metric and one curve per run.

    Each curve is the median over seeds with a 10–90 % band. ``dist_to_theta_star`` is
    drawn on a log scale (generation 0 is θ* itself and is left out there; a run that
    never leaves θ* is named on the panel). One legend below the panels names every run.

    Parameters
    ----------
    runs : mapping of label to Trajectory
    path : path of the PNG
    metrics : metric names to plot (default: every metric of the first run)
    title : figure title
    descriptions : mapping, optional
        Metric name → what it measures, with its unit: the panels' y labels (default: the
        :class:`~stabfw.core.capabilities.MetricInfo` descriptions the runner recorded in
        ``meta["metric_info"]``).
    """
    return save_figure(runs_figure(runs, metrics, title, descriptions), path, tight=False)


def plot_analysis(results: dict, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`analysis_figure` as a PNG at ``path``."""
    return save_figure(analysis_figure(results, title), path, tight=False)


def analysis_figure(results: dict, title: str | None = None) -> Any:
    """The figure of analyzer results (the dict :func:`stabfw.analysis.pipeline.analyze_run`
    returns).

    Panels, as far as the results hold them: distance to θ* per generation (log scale,
    mean with the 10–90 % band, and the fitted contraction rate); the leading eigenvalues
    of J against the unit circle, one marker per method; ρ(J) against λ with the
    exponential-family value λ/(1+λ) and Theorem 1's ρ(λ) where its condition holds, and
    the critical λ.
    """
    plt = pyplot()
    panels = []
    if results.get("fixed_point"):
        panels.append("distance")
    if results.get("jacobian"):
        panels.append("eigenvalues")
    if results.get("lambda_curve") or results.get("critical_lambda"):
        panels.append("lambda")
    if not panels:
        raise ValueError("no fixed_point, jacobian or lambda_curve results to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        if panel == "distance":
            fp = results["fixed_point"]
            d = np.array([np.nan if v is None else v for v in fp["distance_mean"]], float)
            lo = np.array([np.nan if v is None else v for v in fp["distance_q10"]], float)
            hi = np.array([np.nan if v is None else v for v in fp["distance_q90"]], float)
            g = np.arange(d.size)
            ax.plot(g[1:], d[1:], color="C0", lw=2, label="mean over seeds")
            ax.fill_between(g[1:], lo[1:], hi[1:], color="C0", alpha=0.2, lw=0, label="10–90 %")
            if fp.get("stationary_level"):
                ax.axhline(fp["stationary_level"], color="gray", ls=":", lw=1,
                           label=f"stationary level {fp['stationary_level']:.3g}")
            if np.nanmax(np.where(np.isfinite(d), d, 0.0)) > 0:  # λ = 0: θ never moves
                ax.set_yscale("log")
            ax.set_xlabel("generation")
            ax.set_ylabel("‖θ_t − θ*‖ (units of θ, log scale)")
            integer_generations(ax)
            rate = fp.get("rate")
            ax.set_title(f"{fp['verdict']}" + (f", rate {rate:.3g}" if rate is not None else ""),
                         fontsize=10)
            _legend(ax, fontsize=8)
        elif panel == "eigenvalues":
            t = np.linspace(0, 2 * np.pi, 400)
            ax.plot(np.cos(t), np.sin(t), color="gray", lw=1)
            markers = {"dense": "o", "implicit": "x", "finite_difference": "+", "empirical": "s"}
            for i, (name, r) in enumerate(results["jacobian"].items()):
                ev = np.array([[np.nan if x is None else x for x in e] for e in r["eigenvalues"]],
                              float).reshape(-1, 2)
                status = r.get("status", "ok")
                ax.scatter(ev[:, 0], ev[:, 1], marker=markers.get(name, "o"), s=50,
                           facecolors="none" if markers.get(name) in ("o", "s") else None,
                           color=f"C{i}" if status == "ok" else "#bbbbbb",
                           label=f"{name}: ρ = {r['spectral_radius']:.4g}"
                           + ("" if status == "ok" else f" — {status}, no evidence"))
            ax.set_aspect("equal")
            ax.axhline(0, color="gray", lw=0.5)
            ax.axvline(0, color="gray", lw=0.5)
            ax.set_xlabel("Re λ_i(J)")
            ax.set_ylabel("Im λ_i(J)")
            ax.set_title("leading eigenvalues of J vs the unit circle", fontsize=10)
            _legend(ax, fontsize=8, loc="lower left")
        else:
            lc = results.get("lambda_curve")
            if lc:
                lams = np.asarray(lc["lams"], float)
                rho = np.asarray(lc["spectral_radius"], float)
                # a Jacobian whose status is not ok is no evidence: grey, hollow, labelled
                status = lc.get("status") or ["ok"] * lams.size
                good = np.array([st == "ok" for st in status])
                ci = lc.get("ci") or [None] * lams.size
                yerr = np.array([[r - c[0], c[1] - r] if c else [0.0, 0.0]
                                 for r, c in zip(rho, ci)]).T
                ax.plot(lams[good], rho[good], "-", color="C0", lw=2)
                ax.errorbar(lams[good], rho[good], yerr=yerr[:, good], fmt="o", color="C0",
                            capsize=3, label=f"measured ρ(J) ({lc['method']})")
                if (~good).any():
                    ax.plot(lams[~good], rho[~good], "o", color="#bbbbbb", mfc="white",
                            label="no evidence (status not ok)")
                    for lv, rv, st in zip(lams[~good], rho[~good],
                                          [st for st in status if st != "ok"]):
                        ax.annotate(st, (lv, rv), fontsize=7, color="gray", xytext=(4, 4),
                                    textcoords="offset points")
                grid = np.linspace(0, lams.max(), 200)
                ax.plot(grid, grid / (1 + grid), color="gray", ls="--", lw=1,
                        label="λ/(1+λ) (exponential family)")
                th = lc.get("theorem1")
                if th:
                    rate = np.array([np.nan if v is None else v for v in th["rate"]], float)
                    ax.plot(th["lam_grid"], rate, color="crimson", lw=1.5,
                            label=f"Theorem 1 (α={th['alpha']:.3g}, L={th['L']:.3g}, "
                                  f"ε={th['eps']:.3g})")
            crit = results.get("critical_lambda")
            if crit and crit["status"] == "crossing" and crit.get("lam_star") is not None:
                ci = crit.get("ci")
                ax.axvline(crit["lam_star"], color="k", ls=":", lw=1.2,
                           label=f"critical λ* = {crit['lam_star']:.3g}" + (
                               f", CI [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else ""))
                if ci and all(math.isfinite(float(v)) for v in ci):
                    ax.axvspan(float(ci[0]), float(ci[1]), color="k", alpha=0.08, lw=0)
            elif crit and crit.get("text"):
                ax.text(0.02, 0.02, crit["text"], transform=ax.transAxes, fontsize=7,
                        color="gray")
            ax.axhline(1.0, color="gray", lw=1)
            ax.set_ylim(0, 1.3 if not lc else max(1.3, 1.1 * np.nanmax(lc["spectral_radius"])))
            ax.set_xlabel("λ (synthetic / real)")
            ax.set_ylabel("spectral radius ρ(J)")
            ax.set_title("local stability: ρ(J) < 1 is stable", fontsize=10)
            _legend(ax, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


# --- a sweep's stability diagrams ------------------------------------------------------
_SCALE_NAME = {"lam": "λ/(1+λ)", "inverse": "1/x", "log": "log x", "linear": "x"}


def _decreasing(scale: str) -> bool:
    return bool(to_coordinate(np.array([2.0]), scale)[0] < to_coordinate(np.array([1.0]),
                                                                          scale)[0])


def _group_label(group: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={fmt(v, 6)}" for k, v in group.items())


def plot_crossing(table: Any, axis: str, quantity: str, path: str | Path,
                  threshold: float | None = None, xscale: str = "auto",
                  critical: list[CriticalValue] | None = None) -> Path:
    """The quantity (mean ± standard error over seeds) of a cell table along ``axis``, one
    line per combination of the other axes, with the threshold and each critical value ±
    its standard error."""
    plt = pyplot()
    scale = resolve_xscale(axis, xscale)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = list(group_rows(table, other_axes(table, axis)))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(groups), 1)))
    ticks: dict[float, str] = {}
    for color, (group, sub) in zip(colors, groups):
        x = np.asarray(sub[axis].to_numpy(), dtype=float)
        u = to_coordinate(x, scale)
        order = np.argsort(u)
        ax.errorbar(u[order], sub["value"].to_numpy(float)[order],
                    yerr=np.nan_to_num(sub["stderr"].to_numpy(float)[order]), color=color,
                    marker="o", ms=4, capsize=3, lw=1.5, label=_group_label(group) or None)
        ticks.update({float(ui): fmt(float(xi), 6) for ui, xi in zip(u, x)})
        for cv in critical or []:
            if cv.group == group and cv.value is not None:
                uc = float(to_coordinate(np.array([cv.value]), scale)[0])
                ax.axvline(uc, color=color, ls=":", lw=1.2)
                lo = to_coordinate(np.array([max(cv.value - cv.stderr, 0)]), scale)[0]
                hi = to_coordinate(np.array([cv.value + cv.stderr]), scale)[0]
                ax.axvspan(min(lo, hi), max(lo, hi), color=color, alpha=0.15, lw=0)
    if threshold is not None and quantity != "verdict":
        ax.axhline(threshold, color="crimson", lw=1, ls="--", label=f"threshold {threshold:g}")
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    if _decreasing(scale):
        ax.invert_xaxis()
    ax.set_xlabel(f"{axis}" + ("" if scale == "linear" else f"  (spaced as {_SCALE_NAME[scale]})"))
    ax.set_ylabel(quantity + ("  (0 stable, 1 unstable)" if quantity == "verdict" else ""))
    crit = [cv for cv in critical or [] if cv.value is not None]
    title = "; ".join(cv.describe().split(" (")[0] for cv in crit[:3]) or f"{quantity} along {axis}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    fig.text(0.99, 0.005, "mean over seeds ± standard error", ha="right", fontsize=7,
             color="gray")
    return save_figure(fig, path)


def _ordered(col: Any) -> list[str]:
    vals = list(dict.fromkeys(col.map(value_key)))
    try:
        return sorted(vals, key=lambda k: float(json.loads(k)))
    except (TypeError, ValueError):
        return vals


def plot_heatmap(table: Any, x_axis: str, y_axis: str, quantity: str, path: str | Path) -> Path:
    """Heat maps of a quantity (mean over seeds) of a cell table over two swept axes, one
    panel per combination of any further axes (at most 6). A logarithmic colour scale is
    used when the values are positive and span more than two decades."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    others = [c for c in table.columns if "." in c and c not in (x_axis, y_axis)]
    groups = list(group_rows(table, others))[:6]
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (group, sub) in zip(axes.flat, groups):
        xs = _ordered(sub[x_axis])
        ys = _ordered(sub[y_axis])
        grid = np.full((len(ys), len(xs)), np.nan)
        for _, r in sub.iterrows():
            grid[ys.index(value_key(r[y_axis])), xs.index(value_key(r[x_axis]))] = r["value"]
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
        ax.set_xticks(range(len(xs)), [fmt(json.loads(k), 6) for k in xs], fontsize=8)
        ax.set_yticks(range(len(ys)), [fmt(json.loads(k), 6) for k in ys], fontsize=8)
        ax.set_xlabel(x_axis)
        ax.set_ylabel(y_axis)
        ax.set_title(_group_label(group) or quantity, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.85, label=quantity)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if len(groups) > 1:
        fig.suptitle(quantity)
    return save_figure(fig, path)


def plot_rho_vs_lambda(points: Any, theorem: dict[str, Any], path: str | Path) -> Path:
    """Measured ρ(J) against λ (a table with ``lam``, ``rho``, ``group``) with Theorem 1's
    ρ(λ) where its condition holds (``theorem``: ``lam``, ``rate`` and the constants), as
    :func:`stabfw.experiments.stability.rho_points` returns them.

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 1.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    groups = list(points.groupby("group", sort=False))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, max(len(groups), 1)))
    for color, (label, pts) in zip(colors, groups):
        pts = pts.sort_values("lam")
        u = to_coordinate(pts["lam"].to_numpy(float), "lam")
        ax.plot(u, pts["rho"].to_numpy(float), "o-", color=color,
                label=f"measured ρ(J) {label}".strip())
    text = ("α={alpha:.3g}, L={L:.3g}, ε={eps:.3g}".format(**theorem)
            if theorem.get("estimated") else "ε = 0 (well-specified)")
    ax.plot(to_coordinate(np.asarray(theorem["lam"]), "lam"), theorem["rate"], color="crimson",
            lw=1.5, label=f"Theorem 1 bound ({text})")
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    lams = sorted(set(points["lam"].tolist()))
    ax.set_xticks(to_coordinate(np.array(lams), "lam"), [fmt(v, 6) for v in lams], fontsize=8)
    ax.set_xlabel("λ (spaced as λ/(1+λ))")
    ax.set_ylabel("spectral radius ρ(J)")
    ax.set_ylim(0, max(1.3, float(points["rho"].max()) * 1.1))
    ax.set_title("local stability: ρ(J) < 1 is stable", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return save_figure(fig, path)


_VERDICT_COLORS = {"converged": "#2a9d8f", "stationary_noise": "#8ab17d", "collapsing": "#e76f51",
                   "diverging": "#b5179e", "oscillating": "#f4a261", "inconclusive": "#999999"}


def plot_headline(headline: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write :func:`headline_figure` as ``headline.png`` (or any ``path``)."""
    return save_figure(headline_figure(headline, title), path)


def headline_figure(headline: Mapping[str, Any], title: str | None = None) -> Any:
    """The headline figure: one point per λ (spaced as λ/(1+λ), ∞ at 1) — the verdict as the
    marker's colour, ρ(J) with its interval, the closed form λ/(1+λ) and Theorem 1's bound
    where it is not vacuous; points whose Jacobian is not evidence (``not_differentiable``,
    ``ill_conditioned``) are drawn grey and hollow with their status. The λ* statement is
    the caption. Draws the table it is given (the rows of
    :func:`stabfw.analysis.headline.sweep_headline` or ``run_headline``).
    """
    plt = pyplot()
    rows = [r for r in headline.get("rows", []) if r.get("lam") is not None]
    fig, ax = plt.subplots(figsize=(6.8, 4.4))

    def x(lam: float) -> float:
        return 1.0 if math.isinf(lam) else lam / (1 + lam)

    xs = [x(float(r["lam"])) for r in rows]
    theory = [(xv, r["theory_rho"]) for xv, r in zip(xs, rows) if r.get("theory_rho") is not None]
    if theory:
        grid = np.linspace(0, 1, 200)
        ax.plot(grid, grid, color="black", lw=1, ls=":", label="λ/(1+λ) (closed form)")
    bounds = [(xv, r["theorem1"]["bound"]) for xv, r in zip(xs, rows)
              if r.get("theorem1") and not r["theorem1"].get("vacuous")
              and r["theorem1"].get("bound") is not None]
    if bounds:
        bx, by = zip(*bounds)
        ax.plot(bx, by, "s--", color="crimson", ms=4, lw=1, label="Theorem 1 bound")
    for xv, r in zip(xs, rows):
        if r.get("theorem1") and r["theorem1"].get("vacuous"):
            ax.axvspan(xv - 0.01, xv + 0.01, color="crimson", alpha=0.08, lw=0)
    labelled = set()
    for xv, r in zip(xs, rows):
        verdict = r.get("verdict") or "inconclusive"
        color = _VERDICT_COLORS.get(verdict, "#999999")
        if r.get("rho") is None:
            ax.plot([xv], [0.02], "v", color=color, ms=8)
            continue
        grey = r.get("rho_status") in ("not_differentiable", "ill_conditioned")
        ci = r.get("rho_ci")
        yerr = None if not ci else [[r["rho"] - ci[0]], [ci[1] - r["rho"]]]
        lab = None if verdict in labelled or grey else f"verdict: {verdict}"
        labelled.add(verdict)
        ax.errorbar([xv], [r["rho"]], yerr=yerr, fmt="o", ms=8, capsize=3,
                    color="#bbbbbb" if grey else color, mfc="white" if grey else color,
                    label=lab)
        if grey:
            ax.annotate(r["rho_status"], (xv, r["rho"]), fontsize=7, color="gray",
                        xytext=(4, 4), textcoords="offset points")
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_xticks(xs, [("∞" if math.isinf(float(r["lam"])) else fmt(r["lam"], 4)) for r in rows])
    ax.set_xlim(-0.05, 1.05)
    ys = [r["rho"] for r in rows if r.get("rho") is not None] + [1.0]
    ax.set_ylim(0, max(1.3, 1.1 * max(ys)))
    ax.set_xlabel("λ (spaced as λ/(1+λ))")
    ax.set_ylabel("ρ(J) (± CI where measured over seeds)")
    crit = (headline.get("critical") or {}).get("text")
    ax.set_title((title + "\n" if title else "") + (crit or ""), fontsize=9)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7, loc="upper left")
    return fig
