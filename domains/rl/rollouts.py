"""Roll out a stochastic policy in gymnasium environments, reproducibly and in parallel.

Every episode ``k`` of a rollout owns two numbers derived from the rollout's stream key:
an environment seed (the episode starts from ``reset(seed=...)``) and a noise key from
which all of its action noise is drawn up front (one uniform per step and action
dimension; a categorical action is the inverse-CDF draw at that uniform, a Gaussian one
``mean + std · Φ⁻¹(u)``). Episode ``k``'s data therefore depend only on the policy and
``k``, never on which environment slot ran it or what ran beside it; with a
batch-invariant policy forward pass (see :mod:`domains.rl.policy`) the three execution
paths below give the same transitions:

``single``
    one ``gymnasium.make`` environment, episodes in order;
``sync``
    ``gymnasium.make_vec(..., vectorization_mode="sync")`` with autoreset disabled: each
    finished slot is reset with the next episode's seed through ``reset_mask``;
``native``
    the environment's own vectorised implementation
    (``vectorization_mode="vector_entry_point"``; CartPole only): a slot starts episode
    ``k`` by taking the state a single environment reaches after ``reset(seed=...)``.

A rollout asked for ``n_pairs`` pairs starts episodes while the pairs recorded so far
fall short of ``n_pairs``, lets every started episode finish (so each pair carries the
return of its whole episode), and keeps the first ``n_pairs`` pairs in episode order.
The vector paths may run a few episodes more than the single path; they are discarded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

from stabfw.core.streams import subkeys, uniforms
from stabfw.domains.rl.data import Transitions

__all__ = [
    "MODES",
    "Rollouts",
    "episode_seeds",
    "make_runner",
    "native_supported",
    "rollout",
    "sample_actions",
    "space_shape",
]

Mode = Literal["native", "sync", "single"]
MODES = ("native", "sync", "single")

# Environments whose native vector class this module knows how to start per slot.
_NATIVE = {"CartPole-v1", "CartPole-v0"}


def native_supported(env_id: str) -> bool:
    """Whether ``env_id`` has a native vector path here."""
    return env_id in _NATIVE


def episode_seeds(key: np.uint64, k: int) -> tuple[int, np.uint64]:
    """``(env_seed, noise_key)`` of episode ``k`` of the rollout with stream key ``key``."""
    base = np.asarray([key], dtype=np.uint64)
    return int(subkeys(base, 2 * k)[0]), subkeys(base, 2 * k + 1)[0]


def sample_actions(dist: Any, u: np.ndarray, discrete: bool) -> np.ndarray:
    """Actions from an action distribution and uniforms ``u`` of shape (B, k).

    Discrete: ``dist`` is (B, K) probabilities; the action is the inverse-CDF draw at
    ``u[:, 0]``. Continuous: ``dist`` is ``(mean (B, d), std (d,) or (B, d))`` and the
    action is ``mean + std · Φ⁻¹(u)`` (float32).
    """
    if discrete:
        cdf = np.cumsum(dist, axis=1)[:, :-1]
        return (cdf < u[:, :1]).sum(axis=1).astype(np.int64)
    mean, std = dist
    return (mean + std * special.ndtri(u)).astype(np.float32)


@dataclass
class Rollouts:
    """Finished episodes in episode order.

    Attributes
    ----------
    obs, act : list of numpy.ndarray
        Per episode: observations (T, obs_dim) and actions taken in them.
    returns, lengths : numpy.ndarray
        Undiscounted return and number of steps of each episode.
    terminated : numpy.ndarray of bool
        Whether the episode ended by termination (rather than the step limit).
    final_obs : numpy.ndarray, shape (E, obs_dim)
        The observation after the last step.
    env_steps : int
        Environment steps executed, counting every slot of a vector environment.
    seconds : float
        Wall time of the rollout.
    """

    obs: list[np.ndarray]
    act: list[np.ndarray]
    returns: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    final_obs: np.ndarray
    env_steps: int
    seconds: float

    def transitions(self, n_pairs: int | None = None) -> Transitions:
        """The pairs of the episodes in order, cut to the first ``n_pairs``."""
        if not self.obs:
            raise ValueError("no episodes were rolled out")
        episode = np.concatenate([np.full(len(o), k, dtype=np.int64)
                                  for k, o in enumerate(self.obs)])
        ret = np.concatenate([np.full(len(o), r) for o, r in zip(self.obs, self.returns)])
        out = Transitions(np.concatenate(self.obs), np.concatenate(self.act), episode, ret)
        if n_pairs is not None:
            if len(out) < n_pairs:
                raise RuntimeError(f"rollout produced {len(out)} pairs, {n_pairs} requested")
            out = out.take(np.arange(n_pairs))
        return out


# --- execution paths --------------------------------------------------------------------
class _Single:
    def __init__(self, env_id: str, max_steps: int, env_kwargs: dict[str, Any]):
        import gymnasium as gym

        self.n = 1
        self.env = gym.make(env_id, max_episode_steps=max_steps, disable_env_checker=True,
                            **env_kwargs)
        self.space = self.env.action_space

    def restart(self, slots: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        obs = [self.env.reset(seed=s)[0] for s in seeds if s is not None]
        return np.asarray(obs, dtype=np.float32)

    def step(self, actions: np.ndarray):
        a = int(actions[0]) if actions.ndim == 1 else actions[0]
        obs, r, term, trunc, _ = self.env.step(a)
        return (np.asarray(obs, dtype=np.float32)[None], np.array([r], dtype=float),
                np.array([term]), np.array([term or trunc]))

    def close(self) -> None:
        self.env.close()


class _Sync:
    def __init__(self, env_id: str, max_steps: int, n: int, env_kwargs: dict[str, Any]):
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        self.n = n
        self.env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync",
                                vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
                                max_episode_steps=max_steps, disable_env_checker=True,
                                **env_kwargs)
        self.space = self.env.single_action_space
        self.env.reset(seed=[0] * n)
        self.obs = None

    def restart(self, slots: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        mask[slots] = True
        full: list[int | None] = [None] * self.n
        for j, s in zip(slots, seeds):
            full[j] = s
        obs, _ = self.env.reset(seed=full, options={"reset_mask": mask})
        started = [j for j, s in zip(slots, seeds) if s is not None]
        return np.asarray(obs, dtype=np.float32)[started]

    def step(self, actions: np.ndarray):
        obs, r, term, trunc, _ = self.env.step(actions)
        return np.asarray(obs, dtype=np.float32), np.asarray(r, dtype=float), term, term | trunc

    def close(self) -> None:
        self.env.close()


class _NativeCartPole:
    def __init__(self, env_id: str, max_steps: int, n: int, env_kwargs: dict[str, Any]):
        import gymnasium as gym

        self.n = n
        self.env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                                max_episode_steps=max_steps, **env_kwargs)
        self.base = self.env.unwrapped
        self.space = self.env.single_action_space
        # a single environment only to read the start state reset(seed) gives
        self.helper = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
        self.env.reset(seed=0)

    def restart(self, slots: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        out = []
        for j, s in zip(slots, seeds):
            if s is None:  # idle: the native class resets finished slots itself
                continue
            self.helper.reset(seed=s)
            self.base.state[:, j] = self.helper.state
            self.base.steps[j] = 0
            self.base.prev_done[j] = False
            out.append(np.asarray(self.helper.state, dtype=np.float32))
        return np.asarray(out, dtype=np.float32).reshape(-1, self.base.state.shape[0])

    def step(self, actions: np.ndarray):
        obs, r, term, trunc, _ = self.env.step(actions)
        return np.asarray(obs, dtype=np.float32), np.asarray(r, dtype=float), term, term | trunc

    def close(self) -> None:
        self.env.close()
        self.helper.close()


def make_runner(env_id: str, mode: Mode, num_envs: int, max_steps: int,
                env_kwargs: dict[str, Any] | None = None):
    """An execution path (see the module docstring)."""
    kw = dict(env_kwargs or {})
    if mode == "single":
        return _Single(env_id, max_steps, kw)
    if mode == "sync":
        return _Sync(env_id, max_steps, num_envs, kw)
    if mode == "native":
        if not native_supported(env_id):
            raise ValueError(f"domain.vectorization='native' is not available for {env_id!r} "
                             f"(only {', '.join(sorted(_NATIVE))}); use 'sync' or 'single'")
        return _NativeCartPole(env_id, max_steps, num_envs, kw)
    raise ValueError(f"vectorization must be one of {MODES}, got {mode!r}")


def rollout(
    runner: Any,
    actor: Callable[[np.ndarray], Any],
    discrete: bool,
    key: np.uint64,
    max_steps: int,
    *,
    n_pairs: int | None = None,
    n_episodes: int | None = None,
) -> Rollouts:
    """Roll out ``actor`` until ``n_pairs`` pairs or ``n_episodes`` episodes exist.

    Parameters
    ----------
    runner
        An execution path from :func:`make_runner`.
    actor : callable
        ``actor(obs (B, obs_dim) float32)`` → action distribution (see
        :func:`sample_actions`); must be batch-invariant for the paths to agree.
    discrete : bool
    key : numpy.uint64
        Stream key; episode ``k`` uses :func:`episode_seeds` ``(key, k)``.
    max_steps : int
        Episode step limit.
    n_pairs, n_episodes : int
        Exactly one: how much to collect.
    """
    if (n_pairs is None) == (n_episodes is None):
        raise ValueError("give exactly one of n_pairs and n_episodes")
    t0 = time.perf_counter()
    B = runner.n
    space = runner.space
    obs_dim = int(np.prod(space_shape(runner)))
    k_noise = 1 if discrete else int(np.prod(space.shape))
    act_shape: tuple[int, ...] = () if discrete else tuple(space.shape)
    act_dtype = np.int64 if discrete else np.float32

    slot_ep = np.full(B, -1, dtype=np.int64)
    slot_t = np.zeros(B, dtype=np.int64)
    slot_ret = np.zeros(B)
    buf_obs = np.zeros((B, max_steps, obs_dim), dtype=np.float32)
    buf_act = np.zeros((B, max_steps, *act_shape), dtype=act_dtype)
    noise = np.zeros((B, max_steps, k_noise))
    obs = np.zeros((B, obs_dim), dtype=np.float32)
    idle_action = np.zeros((B, *act_shape), dtype=act_dtype)
    done_eps: dict[int, tuple] = {}
    state = {"started": 0, "recorded": 0}

    def wanted() -> bool:
        if n_episodes is not None:
            return state["started"] < n_episodes
        return state["recorded"] < n_pairs

    def assign(slots: np.ndarray) -> None:
        seeds: list[int | None] = []
        new, keys = [], []
        for j in slots:
            if wanted():
                k = state["started"]
                state["started"] += 1
                env_seed, nkey = episode_seeds(key, k)
                slot_ep[j], slot_t[j], slot_ret[j] = k, 0, 0.0
                seeds.append(env_seed)
                new.append(j)
                keys.append(nkey)
            else:
                slot_ep[j] = -1
                seeds.append(None)
        if keys:
            noise[new] = uniforms(np.asarray(keys, dtype=np.uint64),
                                  max_steps * k_noise).reshape(len(keys), max_steps, k_noise)
        fresh = runner.restart(np.asarray(slots), seeds)
        if new:
            obs[new] = fresh

    assign(np.arange(B))
    env_steps = 0
    idx = np.flatnonzero(slot_ep >= 0)
    while idx.size:
        everyone = idx.size == B  # the common case: skip the idle-slot bookkeeping
        t = slot_t[idx]
        acts = sample_actions(actor(obs if everyone else obs[idx]), noise[idx, t], discrete)
        buf_obs[idx, t] = obs if everyone else obs[idx]
        buf_act[idx, t] = acts
        if everyone:
            full = acts
        else:
            full = idle_action.copy()
            full[idx] = acts
        new_obs, rew, term, env_done = runner.step(full)
        env_steps += B
        slot_ret[idx] += rew[idx]
        slot_t[idx] += 1
        state["recorded"] += idx.size
        ended = (slot_ep >= 0) & (env_done | (slot_t >= max_steps))
        obs[:] = new_obs
        restart = ended | ((slot_ep < 0) & env_done)
        if restart.any():
            for j in np.flatnonzero(ended):
                T = int(slot_t[j])
                done_eps[int(slot_ep[j])] = (buf_obs[j, :T].copy(), buf_act[j, :T].copy(),
                                             float(slot_ret[j]), T, bool(term[j]),
                                             new_obs[j].copy())
            assign(np.flatnonzero(restart))
            idx = np.flatnonzero(slot_ep >= 0)
    runner_eps = [done_eps[k] for k in range(state["started"])]
    return Rollouts(
        obs=[e[0] for e in runner_eps],
        act=[e[1] for e in runner_eps],
        returns=np.array([e[2] for e in runner_eps]),
        lengths=np.array([e[3] for e in runner_eps], dtype=np.int64),
        terminated=np.array([e[4] for e in runner_eps], dtype=bool),
        final_obs=np.array([e[5] for e in runner_eps], dtype=np.float32).reshape(-1, obs_dim),
        env_steps=env_steps,
        seconds=time.perf_counter() - t0,
    )


def space_shape(runner: Any) -> tuple[int, ...]:
    """Shape of one observation of ``runner``'s environment."""
    env = runner.env
    space = getattr(env, "single_observation_space", None) or env.observation_space
    return tuple(space.shape)
