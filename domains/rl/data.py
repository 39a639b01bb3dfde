"""The data container of the RL domain: (state, action) pairs tagged by episode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Transitions"]


@dataclass(frozen=True, eq=False)
class Transitions:
    """(state, action) pairs in episode order, with each pair's episode id and return.

    Attributes
    ----------
    obs : numpy.ndarray, shape (N, obs_dim), float32
        The observation the action was taken in.
    act : numpy.ndarray, shape (N,) int64 (discrete) or (N, act_dim) float32 (continuous)
        The sampled action (before any clipping by the environment).
    episode : numpy.ndarray, shape (N,) int64
        Episode id of each pair (unique within a container; :meth:`concat` renumbers).
    ret : numpy.ndarray, shape (N,) float64
        Undiscounted return of the whole episode the pair belongs to. A batch cut to an
        exact number of pairs keeps the full return of its last, partly used, episode.
    """

    obs: np.ndarray
    act: np.ndarray
    episode: np.ndarray
    ret: np.ndarray

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        for name in ("act", "episode", "ret"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"Transitions.{name} has {getattr(self, name).shape[0]} rows, "
                                 f"obs has {n}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_episodes(self) -> int:
        """Number of distinct episodes."""
        return int(np.unique(self.episode).size)

    def episode_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, returns)`` of the episodes present, ids in increasing order."""
        ids, first = np.unique(self.episode, return_index=True)
        return ids, self.ret[first]

    def take(self, index: Any) -> Transitions:
        """The pairs at integer positions ``index`` (or a boolean mask)."""
        index = np.asarray(index)
        return Transitions(self.obs[index], self.act[index], self.episode[index],
                           self.ret[index])

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        """Concatenate containers; episode ids of later parts are shifted to stay unique."""
        parts = [p for p in parts if p is not None and len(p) > 0]
        if not parts:
            raise ValueError("nothing to concatenate: every part is empty")
        if len(parts) == 1:
            return parts[0]
        episodes, offset = [], 0
        for p in parts:
            episodes.append(p.episode - p.episode.min() + offset)
            offset = int(episodes[-1].max()) + 1
        return Transitions(
            np.concatenate([p.obs for p in parts]),
            np.concatenate([p.act for p in parts]),
            np.concatenate(episodes),
            np.concatenate([p.ret for p in parts]),
        )

    def equals(self, other: Any) -> bool:
        """Exact equality of every field (used by determinism checks)."""
        return isinstance(other, Transitions) and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("obs", "act", "episode", "ret"))
