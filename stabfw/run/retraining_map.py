"""The retraining map ``θ ↦ G(θ)``: one generation of a run as a function of θ.

Built on the runner's own :class:`~stabfw.run.step.GenerationStep`, so for seed ``s`` and
generation ``t`` it maps the run's θ_{t−1} to the run's θ_t exactly, draw for draw, for
every mixing policy, with or without hooks, warm or cold start.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stabfw.core.streams import stream
from stabfw.run.config import RetrainConfig
from stabfw.run.step import GenerationStep, StepResult, as_retrain_config, replay

__all__ = ["RetrainingMap"]


class RetrainingMap:
    """``θ ↦ G(θ)``: generation ``generation`` of replicate ``seed`` as a function of θ.

    ``G(θ) = theta(fit(mix(real, hooks(generate(with_theta(state, θ), m)), pool), init))``
    where every random draw comes from the fixed streams of one replicate and one
    generation (common random numbers), so ``G`` is a deterministic function and
    differences ``G(θ + h) − G(θ)`` carry no sampling noise. ``state`` is the run's state of
    generation ``generation − 1`` (recomputed by :func:`~stabfw.run.step.replay`; for the
    first generation, the fit on real data, θ*), ``pool`` the synthetic points an
    ``accumulate*`` policy has kept until then, and ``init`` the generating state when the
    config warm-starts. Applied to the run's θ_{t−1} it returns the run's θ_t exactly.

    Parameters
    ----------
    loop : SelfConsumingLoop
        Must be able to take θ back (``capabilities().with_theta``).
    config : RetrainConfig or dict
    seed : int, optional
        The replicate (default: the config's first seed).
    generation : int
        Which generation (default 1, the first retraining generation).

    Examples
    --------
    >>> G = stabfw.RetrainingMap(loop, config, seed=0, generation=1)   # doctest: +SKIP
    >>> np.allclose(G(traj.params[0, 0]), traj.params[0, 1])            # doctest: +SKIP
    True
    """

    #: Evaluations of every map of this process (what analyzer progress bars count).
    evaluations_in_process: int = 0

    def __init__(self, loop: Any, config: RetrainConfig | dict[str, Any], seed: int | None = None,
                 generation: int = 1):
        cfg = as_retrain_config(config)
        if not loop.capabilities().with_theta:
            raise TypeError(f"{type(loop).__name__} does not implement with_theta(state, theta); "
                            "the retraining map needs it to start a generation from any θ")
        if int(generation) < 1:
            raise ValueError(f"generation must be ≥ 1, got {generation}")
        self.loop, self.config = loop, cfg
        self.seed = int(cfg.seed_list[0] if seed is None else seed)
        self.generation = int(generation)
        self.step = GenerationStep(loop, cfg)
        self.n_evaluations = 0
        #: Fixed points solved on this map, by their solve options (as JSON; filled by
        #: :func:`stabfw.analysis.jacobian.solve_map`): the map is a deterministic function,
        #: so one solve serves every analysis that shares the map.
        self.solutions: dict[str, Any] = {}
        self._history: list[StepResult] | None = None
        self._real0: Any = None
        self._real: Any = None

    def _setup(self) -> None:
        if self._history is not None:
            return
        self._real0 = self.step.real_data(self.seed, 0)
        self._history = replay(self.loop, self.config, self.seed, self.generation - 1,
                               real0=self._real0)
        self._real = (self._real0 if self.config.policy != "fresh_real"
                      else self.step.real_data(self.seed, self.generation))

    def with_lam(self, lam: float) -> RetrainingMap:
        """The same replicate's map at another λ, reusing its real data and θ* fit (this
        map itself at its own λ, with what was solved on it)."""
        if float(lam) == self.config.lam:
            return self
        self._setup()
        other = RetrainingMap(self.loop, self.config.model_copy(update={"lam": float(lam)}),
                              seed=self.seed, generation=self.generation)
        if self.generation == 1:  # later generations depend on λ through their history
            other._history, other._real0, other._real = self._history, self._real0, self._real
        return other

    # --- what the map is built from ---------------------------------------------------
    @property
    def real0(self) -> Any:
        """The replicate's real data at generation 0 (what θ* is fitted on)."""
        self._setup()
        return self._real0

    @property
    def real(self) -> Any:
        """The real data this map's generation mixes in."""
        self._setup()
        return self._real

    @property
    def n_real(self) -> int:
        """Number of real points of generation 0 (λ is relative to it)."""
        self._setup()
        return int(self._history[0].n_real)

    @property
    def n_synthetic(self) -> int:
        """Synthetic points drawn by one evaluation."""
        return self.config.n_synthetic(self.n_real)

    @property
    def state_star(self) -> Any:
        """The loop state fitted on real data (generation 0)."""
        self._setup()
        return self._history[0].state

    @property
    def base_state(self) -> Any:
        """The state θ is substituted into: the run's state of generation − 1."""
        self._setup()
        return self._history[-1].state

    @property
    def pool(self) -> Any:
        """The synthetic points an ``accumulate*`` policy carries into this generation."""
        self._setup()
        return self._history[-1].pool

    @property
    def theta_star(self) -> np.ndarray:
        """θ*: the replicate's fit on real data."""
        return np.asarray(self.loop.theta(self.state_star), dtype=float).copy()

    @property
    def dim(self) -> int:
        """Length of θ."""
        return self.theta_star.size

    @property
    def autonomous(self) -> bool:
        """Whether every generation applies the same map (no pool of past synthetic data
        that grows with the generations, as ``accumulate*`` policies keep)."""
        return self.config.policy not in ("accumulate", "accumulate_subsample")

    def require_autonomous(self, what: str) -> None:
        """Refuse a stability analysis of a map that changes from generation to generation."""
        if not self.autonomous:
            raise ValueError(
                f"{what}: loop.policy={self.config.policy!r} keeps a pool of past synthetic "
                "data, so each generation is a different map of θ and one map's fixed point "
                "or Jacobian says nothing about the loop; analyse its trajectory with "
                "FixedPointAnalyzer, or policy 'fixed_real', 'fresh_real' or 'fully_synthetic'")

    @property
    def has_hooks(self) -> bool:
        """Whether curate/correct hooks act on the synthetic batch."""
        return self.step.has_hooks

    @property
    def weights(self) -> tuple[float, float]:
        """Shares ``(w_real, w_syn)`` of real and synthetic points in the training set
        (policies without a pool)."""
        n = 0 if self.config.fully_synthetic else self.n_real
        m = self.n_synthetic
        return n / (n + m), m / (n + m)

    def streams(self, purpose: str) -> np.random.Generator:
        """The stream of ``purpose`` that this map uses."""
        return stream(self.seed, self.generation, purpose)

    def state(self, theta: np.ndarray) -> Any:
        """The loop state with parameters θ."""
        return self.loop.with_theta(self.base_state, np.asarray(theta, dtype=float))

    # --- evaluation -------------------------------------------------------------------
    def __call__(self, theta: Any, init: Any | None = None) -> np.ndarray:
        """G(θ). ``init`` (a θ vector) overrides the warm start of the fit.

        With an exact fitter the warm start only changes how fast the fit converges, not
        its result: the Jacobian analyzers start perturbed refits from the unperturbed fit.
        """
        theta = np.asarray(theta, dtype=float).reshape(-1)
        star = self.theta_star
        if theta.shape != star.shape:
            raise ValueError(f"θ must have length {star.size}, got {theta.size}")
        state = self.state(theta)
        start = state if init is None else self.state(init)
        res = self.step(self.seed, self.generation, state, self.real, self.pool, self.n_real,
                        init=start)
        self.n_evaluations += 1
        RetrainingMap.evaluations_in_process += 1
        return np.asarray(self.loop.theta(res.state), dtype=float).reshape(-1)

    def residual(self, theta: Any | None = None) -> float:
        """‖G(θ) − θ‖ (at θ* by default)."""
        theta = self.theta_star if theta is None else np.asarray(theta, dtype=float)
        return float(np.linalg.norm(self(theta) - theta))
