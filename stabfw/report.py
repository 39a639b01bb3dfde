"""Plots of runs: metric curves across generations with a band over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from stabfw.trajectory import Trajectory

__all__ = ["plot_analysis", "plot_runs"]

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


def plot_runs(
    runs: Mapping[str, Trajectory],
    path: str | Path,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG with one panel per metric and one curve per run.

    Each curve is the median over seeds with a 10–90 % band. ``dist_to_theta_star`` is
    drawn on a log scale (generation 0 is θ* itself and is left out there).

    Parameters
    ----------
    runs : mapping of label to Trajectory
    path : path of the PNG
    metrics : metric names to plot (default: every metric of the first run)
    title : figure title
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    first = next(iter(runs.values()))
    names = list(metrics) if metrics else [m for m in first.metric_names if m not in _SKIP]
    ncols = min(3, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(runs), 1)))
    for ax, name in zip(axes.flat, names):
        for color, (label, traj) in zip(colors, runs.items()):
            if name not in traj.metrics.columns:
                continue
            values = traj.metric(name)
            gens = np.arange(values.shape[1])
            if name == "dist_to_theta_star":
                # log scale: leave out generation 0 (θ* itself) and exact zeros (λ = 0)
                values, gens = np.where(values[:, 1:] > 0, values[:, 1:], np.nan), gens[1:]
                if np.all(np.isnan(values)):
                    continue
            med, lo, hi = _band(values)
            ax.plot(gens, med, color=color, lw=2, label=label)
            ax.fill_between(gens, lo, hi, color=color, alpha=0.2, lw=0)
        if name == "dist_to_theta_star" and ax.has_data():
            ax.set_yscale("log")
            ax.set_ylabel("‖θ_t − θ*‖ (log)")
        ax.set_title(name)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(runs) > 1 and handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 6),
                   bbox_to_anchor=(0.5, -0.01), frameon=False)
    n_seeds = first.seeds.size
    fig.suptitle(title or "", fontsize=13)
    fig.text(0.99, 0.005, f"median over {n_seeds} seeds, band: 10–90 %", ha="right",
             fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.06 if len(runs) > 1 else 0.02, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_analysis(results: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of analyzer results (the dict :func:`stabfw.analysis.analyze_run` returns).

    Panels, as far as the results hold them: distance to θ* per generation (log scale,
    mean with the 10–90 % band, and the fitted contraction rate); the leading eigenvalues
    of J against the unit circle, one marker per method; ρ(J) against λ with the
    exponential-family value λ/(1+λ) and Theorem 1's ρ(λ) where its condition holds, and
    the critical λ.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
            ax.set_yscale("log")
            ax.set_xlabel("generation")
            ax.set_ylabel("‖θ_t − θ*‖ (log)")
            rate = fp.get("rate")
            ax.set_title(f"{fp['verdict']}" + (f", rate {rate:.3g}" if rate is not None else ""),
                         fontsize=10)
            ax.legend(fontsize=8)
        elif panel == "eigenvalues":
            t = np.linspace(0, 2 * np.pi, 400)
            ax.plot(np.cos(t), np.sin(t), color="gray", lw=1)
            markers = {"dense": "o", "implicit": "x", "finite_difference": "+", "empirical": "s"}
            for i, (name, r) in enumerate(results["jacobian"].items()):
                ev = np.array([[np.nan if x is None else x for x in e] for e in r["eigenvalues"]],
                              float).reshape(-1, 2)
                ax.scatter(ev[:, 0], ev[:, 1], marker=markers.get(name, "o"), s=50,
                           facecolors="none" if markers.get(name) in ("o", "s") else None,
                           color=f"C{i}", label=f"{name}: ρ = {r['spectral_radius']:.4g}")
            ax.set_aspect("equal")
            ax.axhline(0, color="gray", lw=0.5)
            ax.axvline(0, color="gray", lw=0.5)
            ax.set_xlabel("Re λ_i(J)")
            ax.set_ylabel("Im λ_i(J)")
            ax.set_title("leading eigenvalues of J vs the unit circle", fontsize=10)
            ax.legend(fontsize=8, loc="lower left")
        else:
            lc = results.get("lambda_curve")
            if lc:
                lams = np.asarray(lc["lams"], float)
                ax.plot(lams, lc["spectral_radius"], "o-", color="C0", lw=2,
                        label=f"measured ρ(J) ({lc['method']})")
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
            if crit and crit["status"] == "crossing":
                ax.axvline(crit["lam_star"], color="k", ls=":", lw=1.2,
                           label=f"critical λ* = {crit['lam_star']:.3g} ± {crit['uncertainty']:.2g}")
            ax.axhline(1.0, color="gray", lw=1)
            ax.set_ylim(0, 1.3 if not lc else max(1.3, 1.1 * np.nanmax(lc["spectral_radius"])))
            ax.set_xlabel("λ (synthetic / real)")
            ax.set_ylabel("spectral radius ρ(J)")
            ax.set_title("local stability: ρ(J) < 1 is stable", fontsize=10)
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
