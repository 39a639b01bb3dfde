"""The anomaly domain's report figures: histograms of the stream's scores under the
detector of generation 0, a middle generation and the last, admitted (score ≤ threshold)
against rejected, per run (λ) — read from ``scores/seed<s>/gen<NNN>.npz``, written by
:meth:`AnomalyLoop.metrics` during the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.plotting import pyplot
from stabfw.core.artifacts import recorded_generations, save_generation

__all__ = ["RECORDED_SEEDS", "SCORES", "record_scores", "score_histograms"]

SCORES = "scores"
#: Seeds whose scores are recorded (the first ones a loop scores).
RECORDED_SEEDS = 1


def record_scores(run_dir: Path, seed: int, generation: int, normal: np.ndarray,
                  anomaly: np.ndarray, threshold: float) -> None:
    """Write one generation's stream scores (float32) and threshold."""
    save_generation(run_dir, SCORES, seed, generation, compress=True,
                    normal=np.asarray(normal, np.float32),
                    anomaly=np.asarray(anomaly, np.float32), threshold=float(threshold))


def score_histograms(runs: Mapping[str, Path]) -> list[tuple[str, Any]]:
    """A row per run (λ), a column each for generations 0, middle and last."""
    from matplotlib.patches import Patch

    recorded = {k: v for k, v in ((k, recorded_generations(d, SCORES)) for k, d in runs.items()) if v}
    if not recorded:
        return []
    plt = pyplot()
    picks = {}
    for label, gens in recorded.items():
        order = sorted(gens)
        picks[label] = list(dict.fromkeys([order[0], order[len(order) // 2], order[-1]]))
    ncols = max(len(p) for p in picks.values())
    fig, axes = plt.subplots(len(picks), ncols, figsize=(4.4 * ncols, 3.0 * len(picks)),
                             squeeze=False)
    for r, (label, gens) in enumerate(picks.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(gens):
                ax.set_visible(False)
                continue
            with np.load(recorded[label][gens[c]]) as f:
                normal, anomaly, tau = f["normal"], f["anomaly"], float(f["threshold"])
            scores = np.concatenate([normal, anomaly])
            scores = scores[np.isfinite(scores)]
            bins = np.histogram_bin_edges(scores, bins=40)
            ax.hist(scores[scores <= tau], bins=bins, color="#2a9d8f", alpha=0.75)
            ax.hist(scores[scores > tau], bins=bins, color="#e76f51", alpha=0.75)
            an = anomaly[np.isfinite(anomaly)]
            if an.size:
                ax.hist(an, bins=bins, histtype="step", color="black", lw=1)
            ax.axvline(tau, color="black", ls="--", lw=1)
            admitted = float(np.mean(scores <= tau)) if scores.size else float("nan")
            ax.set_title(f"{label}, generation {gens[c]}: {100 * admitted:.0f} % admitted",
                         fontsize=9)
            ax.set_xlabel("anomaly score (higher: more anomalous)")
            ax.set_ylabel("stream points")
            ax.grid(alpha=0.3)
    handles = [Patch(color="#2a9d8f", alpha=0.75, label="admitted (score ≤ threshold)"),
               Patch(color="#e76f51", alpha=0.75, label="rejected"),
               Patch(facecolor="none", edgecolor="black", label="true anomalies"),
               plt.Line2D([], [], color="black", ls="--", label="threshold")]
    fig.legend(handles=handles, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.02),
               frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return [("Stream scores: admitted vs rejected, per generation and λ (first seed)", fig)]
