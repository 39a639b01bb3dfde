"""Loops the tests share: pytest puts ``tests/support`` on ``sys.path`` (not ``tests/``,
whose ``stabfw/`` folder would shadow the package)."""

from __future__ import annotations

import numpy as np

import stabfw


class BernoulliCoin(stabfw.SelfConsumingLoop):
    """The README's / API sketch's coin: a bias fitted by maximum likelihood, retrained on its
    own flips (discrete draws: the retraining map is piecewise constant)."""

    def __init__(self, n: int = 100, p_true: float = 0.3):
        self.n, self.p_true = n, p_true

    def real_data(self, rng):
        return (rng.random(self.n) < self.p_true).astype(float)

    def fit(self, data, init, rng):
        return float(np.mean(data))

    def generate(self, state, n, rng):
        return (rng.random(n) < state).astype(float)

    def params(self, state):
        return np.array([state])

    def with_params(self, state, theta):
        return float(theta[0])
