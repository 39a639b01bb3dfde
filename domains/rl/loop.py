"""The RL-policy domain: a policy behaviour-cloned on expert demonstrations mixed with
its own rollouts."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np

from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.loop import SelfConsumingLoop
from stabfw.core.streams import key_of, stream
from stabfw.domains.rl.data import Transitions
from stabfw.domains.rl.experts import Task, make_task
from stabfw.domains.rl.policy import PolicySpec, PolicyState
from stabfw.domains.rl.rollouts import Rollouts, make_runner, native_supported, rollout

__all__ = ["BehaviorCloningLoop"]


class BehaviorCloningLoop(SelfConsumingLoop):
    """A gymnasium policy cloned from an expert, then retrained on its own rollouts.

    Real data are ``n_expert`` (state, action) pairs from the built-in stochastic expert
    (:mod:`domains.rl.experts`); ``generate`` rolls out the current policy with sampled
    actions and returns exactly the requested number of pairs, so λ is the ratio of
    self-generated to expert pairs. ``fit`` is maximum-likelihood behaviour cloning with
    Adam (warm-started from the previous generation when the loop says so).

    Parameters
    ----------
    env_id : str
        A gymnasium id. ``CartPole-v1`` and ``Pendulum-v1`` have built-in experts; any other
        needs ``expert``.
    n_expert : int
        Expert pairs: the real data set's size n.
    expert : str, optional
        ``"module:factory"`` building an expert for other environments (see
        :mod:`domains.rl.experts`).
    expert_noise : float, optional
        The expert's temperature (CartPole, default 1.0) or action std (Pendulum, 0.3).
    hidden : list of int, optional
        Hidden layer widths of the tanh MLP (default ``[64, 64]``).
    epochs : int
        Adam passes over the training set in a warm-started fit (a generation that
        fine-tunes the previous policy).
    cold_epochs : int, optional
        Passes in a fit from scratch (θ*, and every generation when ``warm_start`` is off);
        default ``epochs``.
    batch_size, lr, weight_decay
        Adam settings (a new optimiser per fit).
    max_episode_steps : int, optional
        Episode limit (default: the environment's, 500 for CartPole, 200 for Pendulum).
    vectorization : {"auto", "native", "sync", "single"}
        Rollout path (:mod:`domains.rl.rollouts`); ``auto`` takes ``native`` where this
        domain has it (CartPole) and ``sync`` elsewhere. All give the same data.
    num_envs : int
        Slots of a vector environment.
    eval_episodes : int
        Episodes per evaluation in :meth:`metrics` (sampled actions).
    probe_size, probe_seed : int
        The fixed probe set: ``probe_size`` expert states drawn with ``probe_seed``. It
        defines the functional signature and the KL/entropy metrics, and its mean/std
        normalise the policy's inputs.
    representation : {"weights", "signature"}
        θ returned by :meth:`params`: the policy weights, or the functional signature
        (action probabilities / Gaussian means and log-std on the probe set).
    torch_threads : int, optional
        torch threads while fitting (restored afterwards); ``None`` leaves torch's setting.

    Notes
    -----
    Metrics per generation: ``return_mean`` and ``return_ci95`` (half-width of the 95 %
    t-interval over the evaluation episodes), ``success_rate`` (CartPole: balanced for the
    whole horizon; Pendulum: within 0.2 rad of upright at the end), ``kl_expert_policy``
    (mean over probe states of KL(expert ‖ policy), nats), ``action_entropy`` (mean over
    probe states; differential entropy for a Gaussian policy).
    """

    test_params: ClassVar[dict[str, Any]] = {
        "env_id": "CartPole-v1", "n_expert": 200, "hidden": [8], "epochs": 2,
        "max_episode_steps": 60, "num_envs": 2, "eval_episodes": 2, "probe_size": 16,
    }

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        n_expert: int = 2000,
        expert: str | None = None,
        expert_noise: float | None = None,
        hidden: list[int] | None = None,
        epochs: int = 20,
        cold_epochs: int | None = None,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_episode_steps: int | None = None,
        vectorization: Literal["auto", "native", "sync", "single"] = "auto",
        num_envs: int = 8,
        eval_episodes: int = 20,
        probe_size: int = 256,
        probe_seed: int = 0,
        representation: Literal["weights", "signature"] = "weights",
        torch_threads: int | None = 1,
    ):
        self.env_id = env_id
        self.n_expert = n_expert
        self.expert = expert
        self.expert_noise = expert_noise
        self.hidden = hidden
        self.epochs = epochs
        self.cold_epochs = cold_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_episode_steps = max_episode_steps
        self.vectorization = vectorization
        self.num_envs = num_envs
        self.eval_episodes = eval_episodes
        self.probe_size = probe_size
        self.probe_seed = probe_seed
        self.representation = representation
        self.torch_threads = torch_threads

    # --- lazy set-up ------------------------------------------------------------------
    def _check(self) -> None:
        for name in ("n_expert", "epochs", "batch_size", "num_envs", "eval_episodes",
                     "probe_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"domain.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.eval_episodes < 2:
            raise ValueError("domain.eval_episodes must be ≥ 2 (a confidence interval needs "
                             f"two episodes), got {self.eval_episodes}")
        if self.cold_epochs is not None and self.cold_epochs < 1:
            raise ValueError(f"domain.cold_epochs must be ≥ 1, got {self.cold_epochs}")
        if not self.lr > 0:
            raise ValueError(f"domain.lr must be > 0, got {self.lr}")
        if self.hidden is not None and any(h < 1 for h in self.hidden):
            raise ValueError(f"domain.hidden widths must be ≥ 1, got {self.hidden}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"domain.max_episode_steps must be ≥ 1, got {self.max_episode_steps}")

    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        import gymnasium as gym

        self._check()
        try:
            env_spec = gym.spec(self.env_id)
        except gym.error.Error as err:
            raise ValueError(f"domain.env_id: {err}") from None
        self._task: Task = make_task(self.env_id, self.expert, self.expert_noise)
        self._max_steps = int(self.max_episode_steps or env_spec.max_episode_steps or 1000)
        mode = self.vectorization
        if mode == "auto":
            mode = "native" if native_supported(self.env_id) else "sync"
        self._mode = mode
        self._runner = make_runner(self.env_id, mode, self.num_envs, self._max_steps)
        space = self._runner.space
        self._discrete = hasattr(space, "n")
        if self._discrete != bool(self._task.expert.discrete):
            kinds = ("continuous", "discrete")
            raise ValueError(f"domain.expert gives {kinds[bool(self._task.expert.discrete)]} "
                             f"actions but {self.env_id} has {kinds[self._discrete]} ones")
        # the probe set: fixed expert states, independent of the run's seeds
        probe_key = key_of(stream(self.probe_seed, -1, "probe"))
        episodes = max(2, math.ceil(4 * self.probe_size / self._max_steps))
        ro = self._expert_rollout(probe_key, n_episodes=episodes)
        states = np.concatenate(ro.obs)
        pick = np.random.default_rng(self.probe_seed).choice(
            states.shape[0], size=min(self.probe_size, states.shape[0]), replace=False)
        self._probe = states[np.sort(pick)]
        shift = states.mean(axis=0).astype(float)
        scale = np.maximum(states.std(axis=0).astype(float), 1e-3)
        self._spec = PolicySpec(
            obs_dim=states.shape[1],
            n_out=int(space.n) if self._discrete else int(np.prod(space.shape)),
            discrete=self._discrete,
            hidden=tuple(self.hidden if self.hidden is not None else (64, 64)),
            obs_shift=shift, obs_scale=scale)
        self._expert_probe = self._task.expert.distribution(self._probe)
        self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        # environments do not pickle; everything lazy is rebuilt on first use
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def close(self) -> None:
        """Close the environments (they are rebuilt if the loop is used again)."""
        if getattr(self, "_ready", False):
            self._runner.close()
            self._ready = False

    # --- views --------------------------------------------------------------------------
    @property
    def spec(self) -> PolicySpec:
        """The policy architecture (builds the domain on first use)."""
        self._setup()
        return self._spec

    @property
    def probe_states(self) -> np.ndarray:
        """The fixed probe set of expert states, shape (probe_size, obs_dim)."""
        self._setup()
        return self._probe

    @property
    def rollout_mode(self) -> str:
        """The rollout path in use (``native``, ``sync`` or ``single``)."""
        self._setup()
        return self._mode

    @property
    def task(self) -> Task:
        """The environment, its expert and success criterion."""
        self._setup()
        return self._task

    # --- rollouts ---------------------------------------------------------------------
    def _expert_rollout(self, key: np.uint64, **how: int) -> Rollouts:
        expert = self._task.expert
        return rollout(self._runner, expert.distribution, bool(expert.discrete), key,
                       self._max_steps, **how)

    def policy_rollout(self, state: PolicyState, rng: np.random.Generator, *,
                       n_pairs: int | None = None, n_episodes: int | None = None,
                       runner: Any = None) -> Rollouts:
        """Roll out ``state``'s policy (sampled actions); ``runner`` overrides the path."""
        self._setup()
        actor = self._spec.actor(state.theta)
        return rollout(runner or self._runner, actor, self._discrete, key_of(rng),
                       self._max_steps, n_pairs=n_pairs, n_episodes=n_episodes)

    def _empty(self) -> Transitions:
        d = self._spec.obs_dim
        act = (np.zeros(0, dtype=np.int64) if self._discrete
               else np.zeros((0, self._spec.n_out), dtype=np.float32))
        return Transitions(np.zeros((0, d), dtype=np.float32), act,
                           np.zeros(0, dtype=np.int64), np.zeros(0))

    # --- the loop -------------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator) -> Transitions:
        self._setup()
        return self._expert_rollout(key_of(rng), n_pairs=self.n_expert).transitions(self.n_expert)

    def fit(self, data: Transitions, init: PolicyState | None,
            rng: np.random.Generator) -> PolicyState:
        self._setup()
        if len(data) == 0:
            raise ValueError("fit got an empty data set")
        if init is None:
            theta0, epochs = self._spec.init(rng), self.cold_epochs or self.epochs
        else:
            theta0, epochs = np.array(init.theta, dtype=float), self.epochs
        with self._threads():
            from stabfw.domains.rl.torch_policy import fit_bc  # torch only when fitting

            theta = fit_bc(self._spec, data.obs, data.act, theta0, rng, epochs,
                           self.batch_size, self.lr, self.weight_decay)
        return PolicyState(theta)

    def generate(self, state: PolicyState, n: int, rng: np.random.Generator) -> Transitions:
        self._setup()
        if n == 0:
            return self._empty()
        return self.policy_rollout(state, rng, n_pairs=n).transitions(n)

    def params(self, state: PolicyState) -> np.ndarray:
        if self.representation == "signature":
            return self.signature(state)
        return np.array(state.theta, dtype=float)

    def capabilities(self) -> Capabilities:
        """``with_theta`` needs θ to be the weights (a signature cannot be inverted)."""
        return replace(super().capabilities(), with_theta=self.representation == "weights")

    def with_params(self, state: PolicyState, theta: np.ndarray) -> PolicyState:
        if self.representation != "weights":
            raise NotImplementedError("with_params needs domain.representation='weights'; "
                                      "a functional signature cannot be turned into weights")
        self._setup()
        theta = np.array(theta, dtype=float)
        if theta.shape != (self._spec.dim,):
            raise ValueError(f"θ must have length {self._spec.dim}, got shape {theta.shape}")
        return PolicyState(theta)

    def signature(self, state: PolicyState) -> np.ndarray:
        """Action probabilities (discrete) or means and log-std (continuous) on the probe set."""
        self._setup()
        return self._spec.signature(state.theta, self._probe)

    def report_figures(self, runs):
        """The evaluation return (and KL to the expert) per generation, one curve per λ."""
        from stabfw.domains.rl.figures import return_figure

        return return_figure(runs)

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        return {
            "return_mean": MetricInfo("quality", "higher", "mean evaluation return"),
            "return_ci95": MetricInfo("other", None, "95 % half-width of the return"),
            "success_rate": MetricInfo("quality", "higher"),
            "kl_expert_policy": MetricInfo("error", "lower", "mean KL(expert ‖ policy), nats"),
            "action_entropy": MetricInfo("diversity", None, "mean policy entropy, nats"),
        }

    def metrics(self, state: PolicyState, rng: np.random.Generator) -> dict[str, float]:
        from scipy import stats

        self._setup()
        ro = self.policy_rollout(state, rng, n_episodes=self.eval_episodes)
        r = ro.returns
        half = float(stats.t.ppf(0.975, r.size - 1) * r.std(ddof=1) / math.sqrt(r.size))
        out = {"return_mean": float(r.mean()), "return_ci95": half}
        ok = self._task.success(ro.final_obs, ro.lengths, ro.terminated, self._max_steps)
        if ok is not None:
            out["success_rate"] = float(np.mean(ok))
        kl, ent = self.probe_divergence(state)
        out["kl_expert_policy"] = kl
        out["action_entropy"] = ent
        return out

    def probe_divergence(self, state: PolicyState) -> tuple[float, float]:
        """``(mean KL(expert ‖ policy), mean policy entropy)`` over the probe states.

        References
        ----------
        Cover & Thomas, *Elements of Information Theory*, 2nd ed., 2006, §8.6 and
        eq. (8.63) (Gaussian entropy and relative entropy).
        """
        self._setup()
        dist = self._spec.distribution(state.theta, self._probe)
        if self._discrete:
            pe = np.asarray(self._expert_probe)
            pp = np.clip(dist, 1e-300, None)
            with np.errstate(divide="ignore", invalid="ignore"):
                kl = np.where(pe > 0, pe * (np.log(np.clip(pe, 1e-300, None)) - np.log(pp)), 0.0)
                ent = -np.where(pp > 0, pp * np.log(pp), 0.0)
            return float(kl.sum(axis=1).mean()), float(ent.sum(axis=1).mean())
        mu_e, sd_e = self._expert_probe
        mu_p, sd_p = dist
        kl = (np.log(sd_p / sd_e) + (sd_e**2 + (mu_e - mu_p) ** 2) / (2 * sd_p**2) - 0.5)
        ent = 0.5 * np.log(2 * np.pi * np.e * sd_p**2)
        return float(kl.sum(axis=1).mean()), float(np.sum(ent))

    # --- data container -----------------------------------------------------------------
    def data_size(self, data: Transitions) -> int:
        return 0 if data is None else len(data)

    def concat(self, parts: list[Transitions]) -> Transitions:
        return Transitions.concat(parts)

    def subsample(self, data: Transitions, index: np.ndarray) -> Transitions:
        return data.take(np.asarray(index, dtype=np.int64))

    def score(self, batch: Transitions, state: PolicyState) -> np.ndarray:
        """Per-pair score for the core ``top_fraction`` hook: its episode's return."""
        return batch.ret

    @contextlib.contextmanager
    def _threads(self):
        if self.torch_threads is None:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


