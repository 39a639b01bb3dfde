"""The policy: a small MLP, categorical (discrete actions) or Gaussian (continuous).

θ is one flat float64 vector: every layer's weight (in × out, row-major) then bias, and for a
Gaussian policy a state-independent log-std at the end. Two implementations share it:

* a numpy forward pass used for rollouts, metrics and the functional signature. It is
  *batch-invariant*: a row's output does not depend on which other rows are in the batch
  (``numpy.einsum`` without ``optimize`` sums in a fixed order, unlike BLAS ``matmul``), so
  a vectorised and a single-environment rollout of the same episode give the same actions;
* a torch module built from θ for maximum-likelihood behaviour cloning (:func:`fit_bc`).

References
----------
Pomerleau, "Efficient training of artificial neural networks for autonomous navigation",
Neural Computation 3(1), 1991 (behaviour cloning). Kingma & Ba, "Adam: a method for
stochastic optimization", ICLR 2015.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LOG_STD_BOUNDS", "PolicySpec", "PolicyState"]

#: log-std of a Gaussian policy is clipped to this range in every forward pass.
LOG_STD_BOUNDS = (-5.0, 2.0)


@dataclass(frozen=True, eq=False)
class PolicyState:
    """A fitted policy: its flat parameter vector θ (float64)."""

    theta: np.ndarray


@dataclass(frozen=True, eq=False)
class PolicySpec:
    """Architecture of a policy and the fixed input normalisation.

    Parameters
    ----------
    obs_dim : int
    n_out : int
        Number of actions (discrete) or action dimensions (continuous).
    discrete : bool
    hidden : tuple of int
        Hidden layer widths (tanh).
    obs_shift, obs_scale : numpy.ndarray, shape (obs_dim,)
        Inputs are ``(obs - obs_shift) / obs_scale`` (fixed, not part of θ).
    """

    obs_dim: int
    n_out: int
    discrete: bool
    hidden: tuple[int, ...]
    obs_shift: np.ndarray = field(repr=False)
    obs_scale: np.ndarray = field(repr=False)

    @property
    def sizes(self) -> list[int]:
        """Layer widths from input to output."""
        return [self.obs_dim, *self.hidden, self.n_out]

    @property
    def dim(self) -> int:
        """Length of θ."""
        s = self.sizes
        d = sum(a * b + b for a, b in itertools.pairwise(s))
        return d + (0 if self.discrete else self.n_out)

    def unpack(
        self, theta: np.ndarray
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
        """``([(W, b), ...], log_std or None)`` as views into ``theta``."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.dim,):
            raise ValueError(f"θ must have shape ({self.dim},) for this policy, got {theta.shape}")
        layers, i = [], 0
        for a, b in itertools.pairwise(self.sizes):
            W = theta[i:i + a * b].reshape(a, b)
            i += a * b
            layers.append((W, theta[i:i + b]))
            i += b
        return layers, (None if self.discrete else theta[i:])

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh θ: uniform(±1/√fan_in) weights (PyTorch's default), zero biases, a
        last layer scaled by 0.01 (a near-uniform / zero-mean first policy), log-std 0."""
        parts = []
        s = self.sizes
        for k, (a, b) in enumerate(itertools.pairwise(s)):
            bound = 1.0 / math.sqrt(a)
            W = rng.uniform(-bound, bound, size=(a, b))
            if k == len(s) - 2:
                W *= 0.01
            parts += [W.ravel(), np.zeros(b)]
        if not self.discrete:
            parts.append(np.zeros(self.n_out))
        return np.concatenate(parts)

    # --- numpy forward (batch-invariant) ---------------------------------------------
    def forward(self, theta: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Logits (discrete) or means (continuous), shape (B, n_out), float64."""
        layers, _ = self.unpack(theta)
        return self._forward(layers, obs)

    def _forward(self, layers, obs: np.ndarray) -> np.ndarray:
        h = (np.asarray(obs, dtype=float) - self.obs_shift) / self.obs_scale
        last = len(layers) - 1
        for k, (W, b) in enumerate(layers):
            h = np.einsum("bi,ij->bj", h, W) + b
            if k < last:
                h = np.tanh(h)
        return h

    def distribution(self, theta: np.ndarray, obs: np.ndarray):
        """Action probabilities (B, K), or ``(mean (B, d), std (d,))``."""
        return self.actor(theta)(obs)

    def actor(self, theta: np.ndarray):
        """``obs ↦`` :meth:`distribution` with θ unpacked once (for rollouts)."""
        layers, log_std = self.unpack(np.array(theta, dtype=float))
        if self.discrete:
            def probs(obs: np.ndarray) -> np.ndarray:
                z = self._forward(layers, obs)
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return e / e.sum(axis=1, keepdims=True)

            return probs
        std = np.exp(np.clip(log_std, *LOG_STD_BOUNDS))

        def gaussian(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return self._forward(layers, obs), std

        return gaussian

    def signature(self, theta: np.ndarray, probe: np.ndarray) -> np.ndarray:
        """The functional signature on ``probe``: action probabilities (P·K) for a
        categorical policy; means (P·d) then log-std (d) for a Gaussian one."""
        if self.discrete:
            return self.distribution(theta, probe).ravel()
        _, log_std = self.unpack(theta)
        return np.concatenate([self.forward(theta, probe).ravel(),
                               np.clip(log_std, *LOG_STD_BOUNDS)])
