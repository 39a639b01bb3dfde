"""Per-generation checkpoints: an append-only journal plus the latest loop state.

Each generation writes its own small block (θ and metrics of that generation), then
replaces ``state.pkl`` (the fitted states, pools and the generation reached), each file
atomically. Writing costs O(seeds) per generation however long the run, and a crash at
any instant leaves a consistent checkpoint: blocks past ``state.pkl``'s generation are
ignored on resume.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from stabfw._util.atomic import load_pickle, save_pickle

__all__ = ["Checkpoint"]


class Checkpoint:
    """The checkpoint directory of one run."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def _state(self) -> Path:
        return self.directory / "state.pkl"

    def _block(self, generation: int) -> Path:
        return self.directory / f"gen_{generation:06d}.pkl"

    def exists(self) -> bool:
        """Whether a resumable checkpoint is there."""
        return self._state.is_file()

    def save(self, generation: int, state: dict[str, Any], block: Any) -> None:
        """Record ``generation``: its block first, then the state that points past it."""
        save_pickle(self._block(generation), block)
        save_pickle(self._state, {**state, "generation": generation})

    def load(self) -> tuple[dict[str, Any], list[Any]]:
        """The latest state and the blocks of generations ``0 .. state["generation"]``."""
        state = load_pickle(self._state)
        blocks = [load_pickle(self._block(t)) for t in range(state["generation"] + 1)]
        return state, blocks

    def clear(self) -> None:
        """Remove the checkpoint (after a run finished and its results were written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
