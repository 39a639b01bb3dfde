"""Per-generation arrays a domain records during a run for its report figures.

A domain that draws, say, forecast fans or score histograms records a few arrays per
generation for the first seeds it sees, under ``RUN_DIR/<kind>/seed<s>/gen<NNN>.npz``, and
its ``report_figures`` reads them back. Only the runner's own metric draws are recorded: they
carry a (seed, generation) and the purpose ``"metrics"``; an analyzer's refits do not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.atomic import atomic_write

__all__ = ["recorded_generations", "recording_target", "save_generation"]


def recording_target(run_dir: Any, rng: Any, seen: list[int],
                     max_seeds: int) -> tuple[int, int] | None:
    """``(seed, generation)`` to record this metrics call under, or None.

    Parameters
    ----------
    run_dir : path or None
        The run directory the runner announced (``set_run_dir``); None: nothing recorded.
    rng : numpy.random.Generator
        The metrics stream (a :class:`~stabfw.core.streams.KeyedGenerator` names its seed,
        generation and purpose).
    seen : list of int
        The seeds recorded so far by this loop (updated in place).
    max_seeds : int
        Record the first ``max_seeds`` seeds only.
    """
    seed, gen = getattr(rng, "seed", None), getattr(rng, "generation", None)
    if None in (run_dir, seed, gen) or getattr(rng, "purpose", None) != "metrics":
        return None
    if seed not in seen:
        if len(seen) >= max_seeds:
            return None
        seen.append(seed)
    return int(seed), int(gen)


def save_generation(run_dir: Any, kind: str, seed: int, generation: int,
                    compress: bool = False, **arrays: Any) -> None:
    """Write one generation's ``arrays`` atomically to ``RUN_DIR/kind/seed<s>/gen<NNN>.npz``."""
    path = Path(run_dir) / kind / f"seed{seed}" / f"gen{generation:03d}.npz"
    save = np.savez_compressed if compress else np.savez
    atomic_write(path, lambda f: save(f, **arrays))


def recorded_generations(run_dir: Any, kind: str) -> dict[int, Path]:
    """``{generation: file}`` of the first recorded seed of ``kind`` (empty when none)."""
    seeds = sorted((Path(run_dir) / kind).glob("seed*"),
                   key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    if not seeds:
        return {}
    return {int(re.sub(r"\D", "", p.stem) or 0): p for p in seeds[0].glob("gen*.npz")}
