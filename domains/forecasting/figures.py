"""The forecasting domain's report figures: a fan chart per run (λ) — the real history, the
real future (held out), and the point forecast with its prediction interval at generation
0, a middle generation and the last — read from the forecasts the run recorded
(``forecasts/seed<s>/gen<NNN>.npz``, written by :meth:`ForecastingLoop.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.plotting import pyplot
from stabfw.core.artifacts import recorded_generations, save_generation

__all__ = ["FORECASTS", "fan_chart", "record_forecast"]

#: The folder of a run directory that holds the recorded forecasts.
FORECASTS = "forecasts"
#: Seeds whose forecasts are recorded (the first ones a loop scores).
RECORDED_SEEDS = 2


def record_forecast(run_dir: Path, seed: int, generation: int, point: np.ndarray,
                    lo: np.ndarray, hi: np.ndarray) -> None:
    """Write one generation's point forecast and interval (a few hundred bytes)."""
    save_generation(run_dir, FORECASTS, seed, generation, point=point, lo=lo, hi=hi)


def fan_chart(runs: Mapping[str, Path], history: np.ndarray, future: np.ndarray,
              coverage: float) -> list[tuple[str, Any]]:
    """One panel per run: history, the real future, and the forecasts of generations 0,
    middle and last (first recorded seed) with their ``coverage`` intervals."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    recorded = {label: recorded_generations(d, FORECASTS) for label, d in runs.items()}
    recorded = {k: v for k, v in recorded.items() if v}
    if not recorded:
        return []
    plt = pyplot()
    n = len(recorded)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.8 * nrows), squeeze=False)
    t_hist = np.arange(len(history))
    t_fut = np.arange(len(history), len(history) + len(future))
    colors = {"first": "#2a9d8f", "middle": "#e9c46a", "last": "#e76f51"}
    for ax, (label, gens) in zip(axes.flat, recorded.items()):
        order = sorted(gens)
        picks = {"first": order[0], "middle": order[len(order) // 2], "last": order[-1]}
        ax.plot(t_hist, history, color="black", lw=1.2)
        ax.plot(t_fut, future, color="black", lw=1.2, ls="--")
        drawn: set[int] = set()
        for key, gen in picks.items():
            if gen in drawn:  # a short run: first, middle and last coincide
                continue
            drawn.add(gen)
            with np.load(gens[gen]) as f:
                point, lo, hi = f["point"], f["lo"], f["hi"]
            ax.fill_between(t_fut[:len(point)], lo, hi, color=colors[key], alpha=0.2, lw=0)
            ax.plot(t_fut[:len(point)], point, color=colors[key], lw=1.8,
                    label=f"generation {gen}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("time step (index of the series)")
        ax.set_ylabel("series value (data units)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="black", lw=1.2, label="real history"),
               Line2D([], [], color="black", lw=1.2, ls="--", label="real future (held out)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02),
               frameon=False)
    fig.suptitle(f"forecasts of generations 0, middle and last, {100 * coverage:.0f} % "
                 "prediction interval (first seed)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return [("Fan chart: forecasts per generation and λ", fig)]
