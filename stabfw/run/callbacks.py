"""Callbacks: follow a run generation by generation (progress, experiment trackers).

Pass instances to :func:`stabfw.run_loop` (``callbacks=[...]``). Each method is called
in the process that runs the loop, after the generation's checkpoint is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RunCallback"]


class RunCallback:
    """Receives a run's progress; override the methods you need (each does nothing)."""

    def on_run_start(self, config: Any, seeds: np.ndarray, start_generation: int) -> None:
        """Before the first generation computed (``start_generation`` > 0 on resume)."""

    def on_generation(self, generation: int, theta: np.ndarray, metrics: Any) -> None:
        """After ``generation``: θ of every seed ``(n_seeds, d)`` and that generation's rows
        of the metrics table (a pandas DataFrame)."""

    def on_run_end(self, trajectory: Any) -> None:
        """After the last generation, with the whole :class:`~stabfw.Trajectory`."""
