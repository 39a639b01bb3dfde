"""Plots of runs: metric curves across generations with a band over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from stabfw.trajectory import Trajectory

__all__ = ["plot_runs"]

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
