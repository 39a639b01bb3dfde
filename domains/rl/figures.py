"""The RL domain's report figures: the evaluation return (and the KL to the expert, where
the run recorded it) per generation, one curve per run (λ), read from ``metrics.csv``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.plotting import pyplot

__all__ = ["return_figure"]

_PANELS = (("return_mean", "mean evaluation return"),
           ("kl_expert_policy", "KL(expert ‖ policy) (nats)"))


def return_figure(runs: Mapping[str, Path]) -> list[tuple[str, Any]]:
    """``[("Return per generation …", Figure)]``: median over seeds with a 10–90 % band,
    a panel each for the return and the KL to the expert; none when no run has a
    ``return_mean`` column."""
    import pandas as pd
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    frames = {}
    for label, d in runs.items():
        f = Path(d) / "metrics.csv"
        if f.is_file():
            frames[label] = pd.read_csv(f)
    panels = [(c, y) for c, y in _PANELS if any(c in fr.columns for fr in frames.values())]
    if not panels or panels[0][0] != "return_mean":
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(frames), 1)))
    for ax, (col, ylabel) in zip(axes.flat, panels):
        for color, fr in zip(colors, frames.values()):
            if col not in fr.columns:
                continue
            g = fr.groupby("generation")[col]
            med, lo, hi = g.median(), g.quantile(0.1), g.quantile(0.9)
            ax.plot(med.index, med.to_numpy(), color=color, lw=2)
            ax.fill_between(med.index, lo.to_numpy(), hi.to_numpy(), color=color, alpha=0.2,
                            lw=0)
        ax.set_xlabel("generation")
        ax.set_ylabel(ylabel)
        ax.set_title(col, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2, label=label) for c, label in zip(colors, frames)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return [("Return per generation and λ (median over seeds, band 10–90 %)", fig)]
