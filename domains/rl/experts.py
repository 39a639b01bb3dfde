"""Expert controllers that produce the real data (demonstrations), and task facts.

An expert is a *stochastic* policy with a known action distribution, so that
KL(expert ‖ policy) is finite and behaviour cloning has a well-defined target:

* CartPole: a discrete-time LQR gain ``K`` of the linearised cart-pole; the expert pushes
  right with probability ``sigmoid(−K s / T)`` (temperature ``T``, default 1). ``T → 0``
  is the deterministic bang-bang LQR controller.
* Pendulum: energy-shaping swing-up ``u = k_E (E* − E) sign(θ̇)`` far from the top and a
  discrete LQR stabiliser within 0.5 rad of it; actions are ``N(clip(u, ±2), σ²)``
  (default σ = 0.3).

Any other environment needs an expert given as ``"module:factory"`` in the config; the
factory is called as ``factory(env, noise)`` (``noise`` may be ``None``) and returns an
object with ``discrete`` and ``distribution(obs)`` like the classes below.

References
----------
Åström & Furuta, "Swinging up a pendulum by energy control", Automatica 36(2), 2000.
Barto, Sutton & Anderson, "Neuronlike adaptive elements that can solve difficult learning
control problems", IEEE SMC 13(5), 1983 (the cart-pole). Anderson & Moore, *Optimal
Control: Linear Quadratic Methods*, 1990 (discrete LQR via the Riccati equation).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import linalg, special

__all__ = [
    "CartPoleLQRExpert",
    "Expert",
    "PendulumSwingUpExpert",
    "Task",
    "make_task",
]


class Expert(Protocol):
    """What the domain needs from an expert."""

    discrete: bool

    def distribution(self, obs: np.ndarray) -> Any:
        """Probabilities (B, K), or ``(mean (B, d), std (d,))`` for continuous actions."""


def _dlqr(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Gain K of the discrete LQR ``u = −K x`` (solves the discrete algebraic Riccati
    equation). References: Anderson & Moore 1990, ch. 2."""
    P = linalg.solve_discrete_are(A, B, Q, R)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


class CartPoleLQRExpert:
    """Stochastic LQR expert for ``CartPole-v1``.

    Parameters
    ----------
    temperature : float
        Push right with probability ``sigmoid(−K s / temperature)``. At 1 the expert's
        mean action entropy on its own states is ≈ 0.49 nats (of ln 2 ≈ 0.69) and it still
        balances for 500 steps in every one of 50 test episodes; at 4 it fails often.

    Notes
    -----
    The gain comes from the Euler-discretised dynamics of gymnasium's cart-pole (τ = 0.02,
    force 10 N) linearised at the upright rest, with Q = diag(1, 1, 10, 1), R = 1.
    """

    discrete = True
    n_actions = 2

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"expert_noise (the CartPole expert's temperature) must be > 0, "
                             f"got {temperature}")
        self.temperature = float(temperature)
        self.gain = self._gain()

    @staticmethod
    def _gain() -> np.ndarray:
        g, mc, mp, half, tau = 9.8, 1.0, 0.1, 0.5, 0.02
        M = mc + mp
        # linearised about s = 0 for a force F: thetaacc = (g θ − F/M) / (l (4/3 − mp/M))
        den = half * (4.0 / 3.0 - mp / M)
        A = np.eye(4)
        A[0, 1] = A[2, 3] = tau
        A[3, 2] = tau * g / den
        A[1, 2] = -tau * mp * half * (g / den) / M
        B = np.zeros((4, 1))
        B[3, 0] = -tau / (M * den)
        B[1, 0] = tau * (1.0 / M + mp * half / (M * M * den))
        return _dlqr(A, B, np.diag([1.0, 1.0, 10.0, 1.0]), np.array([[1.0]]))[0]

    def distribution(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=float)
        # elementwise products summed in a fixed order: batch-invariant
        z = -(obs * self.gain).sum(axis=1) / self.temperature
        p_right = special.expit(z)
        return np.stack([1.0 - p_right, p_right], axis=1)


class PendulumSwingUpExpert:
    """Energy-based swing-up with an LQR stabiliser for ``Pendulum-v1``.

    Parameters
    ----------
    noise_std : float
        Standard deviation σ of the Gaussian action noise.
    energy_gain : float
        k_E of the swing-up law.
    capture_angle : float
        Switch to LQR when the pole is within this angle (rad) of upright and |θ̇| < 4.

    Notes
    -----
    gymnasium's pendulum: θ̈ = 15 sin θ + 3u (g = 10, m = l = 1), dt = 0.05, |u| ≤ 2, θ = 0
    upright. With E = θ̇²/2 + 15 cos θ, dE/dt = 3 u θ̇, so ``u ∝ (E* − E) θ̇`` pumps energy
    up to E* = 15 (upright at rest). The LQR gain uses Q = diag(1, 0.1), R = 0.001 (the
    environment's cost weights).
    """

    discrete = False
    act_dim = 1
    _a, _b, _dt, _umax = 15.0, 3.0, 0.05, 2.0

    def __init__(self, noise_std: float = 0.3, energy_gain: float = 1.0,
                 capture_angle: float = 0.5):
        if not noise_std > 0:
            raise ValueError(f"expert_noise (the Pendulum expert's action std) must be > 0, "
                             f"got {noise_std}")
        self.noise_std = float(noise_std)
        self.energy_gain = float(energy_gain)
        self.capture_angle = float(capture_angle)
        a, b, dt = self._a, self._b, self._dt
        A = np.array([[1 + a * dt * dt, dt], [a * dt, 1.0]])
        B = np.array([[b * dt * dt], [b * dt]])
        self.gain = _dlqr(A, B, np.diag([1.0, 0.1]), np.array([[0.001]]))[0]

    def mean(self, obs: np.ndarray) -> np.ndarray:
        """The noise-free torque, clipped to ±2, shape (B, 1)."""
        obs = np.asarray(obs, dtype=float)
        c, s, thdot = obs[:, 0], obs[:, 1], obs[:, 2]
        th = np.arctan2(s, c)
        energy = 0.5 * thdot**2 + self._a * c
        swing = self.energy_gain * (self._a - energy) * np.where(thdot >= 0, 1.0, -1.0)
        lqr = -(self.gain[0] * th + self.gain[1] * thdot)
        near = (c > math.cos(self.capture_angle)) & (np.abs(thdot) < 4.0)
        return np.clip(np.where(near, lqr, swing), -self._umax, self._umax)[:, None]

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.mean(obs), np.full(1, self.noise_std)


@dataclass(frozen=True)
class Task:
    """An environment with its expert and its success criterion.

    ``success(final_obs, length, terminated, max_steps)`` is ``None`` when undefined.
    """

    env_id: str
    expert: Any
    success_name: str | None

    def success(self, final_obs: np.ndarray, length: np.ndarray, terminated: np.ndarray,
                max_steps: int) -> np.ndarray | None:
        """Per-episode success flags, or ``None`` when the task has no success criterion."""
        if self.success_name == "balanced":  # CartPole: never fell within the horizon
            return (~terminated) & (length >= max_steps)
        if self.success_name == "upright":  # Pendulum: within 0.2 rad of the top at the end
            th = np.arctan2(final_obs[:, 1], final_obs[:, 0])
            return np.abs(th) < 0.2
        return None


_BUILTIN = {
    "CartPole-v1": (CartPoleLQRExpert, "balanced"),
    "Pendulum-v1": (PendulumSwingUpExpert, "upright"),
}


def make_task(env_id: str, expert: str | None = None, noise: float | None = None) -> Task:
    """The task of ``env_id``: its built-in expert, or ``expert="module:factory"``."""
    if expert is None:
        if env_id not in _BUILTIN:
            raise ValueError(
                f"domain.env_id={env_id!r} has no built-in expert (built-in: "
                f"{', '.join(_BUILTIN)}); give domain.expert as 'module:factory' where "
                "factory(env, noise) returns an object with `discrete` and "
                "`distribution(obs)`")
        cls, success = _BUILTIN[env_id]
        return Task(env_id, cls() if noise is None else cls(noise), success)
    module_name, _, attr = expert.partition(":")
    if not attr:
        raise ValueError(f"domain.expert must look like 'module:factory', got {expert!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"domain.expert={expert!r} cannot be imported: {err}") from None
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        obj = factory(env, noise)
    finally:
        env.close()
    for name in ("discrete", "distribution"):
        if not hasattr(obj, name):
            raise ValueError(f"domain.expert={expert!r} returned {type(obj).__name__} "
                             f"without `{name}`")
    return Task(env_id, obj, _BUILTIN.get(env_id, (None, None))[1])
