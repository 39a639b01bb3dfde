"""Mixing policies: which points make up the training set of the next generation."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from stabfw.core.loop import SelfConsumingLoop
from stabfw.run.config import RetrainConfig

__all__ = ["TrainingSet", "build_training_set"]


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
    use_real = real if not config.fully_synthetic else None
    n_real = loop.data_size(use_real) if use_real is not None else 0
    if policy in ("fixed_real", "fresh_real", "fully_synthetic"):
        new_pool, extra = None, synthetic
    elif policy in ("accumulate", "accumulate_subsample"):
        new_pool = extra = synthetic if pool is None else loop.concat([pool, synthetic])
    else:  # pragma: no cover - the config schema rejects other names
        raise ValueError(f"unknown policy {policy!r}")
    n_extra = loop.data_size(extra) if extra is not None else 0
    data = loop.concat([p for p, k in ((use_real, n_real), (extra, n_extra)) if k > 0])
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
