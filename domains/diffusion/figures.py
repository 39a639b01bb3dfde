"""The diffusion domain's report figures: the sample grids it wrote during the run, per
generation and λ (nothing is sampled again)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.plotting import pyplot

__all__ = ["sample_figures"]

#: Seeds whose montage a run's page shows, and generations per row of a sweep's figure.
MAX_SEEDS = 3
MAX_GENERATIONS = 5


def _generations(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(re.sub(r"\D", "", p.stem) or 0), p) for p in folder.glob("gen*.png")
                  if not p.name.endswith(".tmp.png"))


def _spread(items: list[Any], k: int) -> list[Any]:
    """At most ``k`` items, evenly spread, the first and the last always among them."""
    if len(items) <= k:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _sweep_figure(grids: Mapping[str, list[tuple[int, Path]]]) -> Any:
    """Rows: the cells (λ); columns: generations 0 … last; each panel a generation's grid."""
    from PIL import Image

    plt = pyplot()
    rows = {label: _spread(g, MAX_GENERATIONS) for label, g in grids.items() if g}
    ncols = max(len(g) for g in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 2.35 * len(rows)),
                             squeeze=False)
    for r, (label, gens) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(gens):
                ax.set_visible(False)
                continue
            gen, path = gens[c]
            with Image.open(path) as im:
                ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            ax.set_title(f"generation {gen}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("samples of seed 0 (the same noise in every generation)", fontsize=10)
    fig.tight_layout()
    return fig


def sample_figures(runs: Mapping[str, Path], artifacts_dir: str | Path | None = None
                   ) -> list[tuple[str, Any]]:
    """Report figures from the grids under ``samples/`` (:func:`~.grids.write_montage`).

    One run: the montage of each of its first seeds (one row per generation). Several
    runs (a sweep's cells): one figure, a row per cell and a column per generation (up to
    five, first and last included), and each cell's montage of seed 0.

    Parameters
    ----------
    runs : mapping of label to run directory
    artifacts_dir : path, optional
        Where the loop wrote its grids instead of the run directory.
    """
    out: list[tuple[str, Any]] = []
    folders = {label: Path(artifacts_dir or d) / "samples" for label, d in runs.items()}
    if len(runs) == 1:
        ((label, samples),) = folders.items()
        seeds = sorted((p for p in samples.glob("*.png") if not p.name.endswith(".tmp.png")),
                       key=lambda p: (len(p.stem), p.stem))
        for p in seeds[:MAX_SEEDS]:
            out.append((f"{label}: samples of {p.stem.replace('seed', 'seed ')}, one row per "
                        "generation", p))
        return out
    grids = {label: _generations(f / "seed0") for label, f in folders.items()}
    if any(grids.values()):
        out.append(("Samples per generation and λ (seed 0)", _sweep_figure(grids)))
    for label, f in folders.items():
        if (f / "seed0.png").is_file():
            out.append((f"{label}: samples of seed 0, one row per generation", f / "seed0.png"))
    return out
