"""Mixing policies: which points make up the training set of the next generation."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from stabfw.core import containers
from stabfw.core.loop import SelfConsumingLoop
from stabfw.run.config import RetrainConfig

__all__ = ["TrainingSet", "build_training_set"]

_REPLACE = frozenset({"fixed_real", "fresh_real", "fully_synthetic"})
_ACCUMULATE = frozenset({"accumulate", "accumulate_subsample"})


class TrainingSet(NamedTuple):
    """A mixed training set. Real points come first: positions ``[0, n_real)``."""

    data: Any
    n_real: int
    n_synthetic: int


def build_training_set(
    loop: SelfConsumingLoop,
    config: RetrainConfig,
    real: Any | None,
    synthetic: Any,
    pool: Any | None,
    rng: np.random.Generator | None,
) -> tuple[TrainingSet, Any | None]:
    """Mix real and synthetic data according to ``config.policy``.

    Parameters
    ----------
    real
        The real points of this generation (the fixed set, or a fresh draw for
        ``fresh_real``); ignored when λ is infinite.
    synthetic
        This generation's synthetic batch, after the curate/correct hooks.
    pool
        Synthetic points accumulated from earlier generations (``accumulate*`` policies).
    rng
        Used only by ``accumulate_subsample`` (the others accept None).

    Returns
    -------
    (TrainingSet, pool)
        The training set and the pool to carry to the next generation.
    """
    policy = config.policy
    if policy in _ACCUMULATE:
        new_pool = extra = synthetic if pool is None else loop.concat([pool, synthetic])
    elif policy in _REPLACE:
        new_pool, extra = None, synthetic
    else:  # pragma: no cover - the config schema rejects other names
        raise ValueError(f"unknown policy {policy!r}")
    use_real = None if config.fully_synthetic else real
    size = loop.data_size
    n_real = size(use_real) if use_real is not None else 0
    n_extra = size(extra) if extra is not None else 0
    parts = [p for p, k in ((use_real, n_real), (extra, n_extra)) if k > 0]
    # the default concat would size the parts again
    data = (containers.join(parts) if type(loop).concat is SelfConsumingLoop.concat
            else loop.concat(parts))
    total = n_real + n_extra
    if policy == "accumulate_subsample":
        n0 = loop.data_size(real) if real is not None else 0
        target = config.subsample_size or (n_real + config.n_synthetic(n0))
        if total > target:
            idx = np.sort(rng.choice(total, size=target, replace=False))
            data = loop.subsample(data, idx)
            n_real = int(np.sum(idx < n_real))
            total = target
    return TrainingSet(data, n_real, total - n_real), new_pool
