"""The ``top_return`` curate hook: filtered self-imitation on whole episodes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stabfw.core.hooks import Hook, register_hook
from stabfw.domains.rl.data import Transitions

__all__ = ["top_return"]


@register_hook("top_return")
def top_return(q: float = 0.5) -> Hook:
    """Keep the own episodes whose return is in the top fraction ``q`` (by episode count).

    ``ceil(q · E)`` of the batch's E episodes are kept (at least one), ties broken by
    episode order; every pair of a kept episode is kept, so the curated batch is smaller
    than the generated one and the mixed training set has fewer than ⌊λn⌋ own pairs.

    References
    ----------
    Oh, Guo, Singh & Lee, "Self-imitation learning", ICML 2018; Chen et al., "Decision
    transformer" / filtered behaviour cloning baselines, NeurIPS 2021.
    """
    if not 0 < q <= 1:
        raise ValueError(f"top_return: q must be in (0, 1], got {q}")

    def hook(batch: Any, *, state: Any, loop: Any, rng: np.random.Generator, real: Any) -> Any:
        if not isinstance(batch, Transitions):
            raise TypeError(f"top_return needs the rl domain's Transitions, got "
                            f"{type(batch).__name__}")
        if len(batch) == 0:
            return batch
        ids, returns = batch.episode_returns()
        keep = max(1, math.ceil(q * ids.size - 1e-9))
        order = np.lexsort((ids, -returns))  # by return, descending; then by episode id
        return batch.take(np.isin(batch.episode, ids[order[:keep]]))

    return hook
