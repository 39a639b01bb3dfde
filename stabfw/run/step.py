"""THE generation step: generate → curate → correct → mix → fit, for one seed.

Everything that retrains a loop goes through :class:`GenerationStep`: the runner's
per-seed path, the :class:`~stabfw.RetrainingMap` the analyzers iterate and differentiate,
and :func:`replay`. Every random draw of generation ``t`` of seed ``s`` comes from the
stream ``(s, t, purpose)`` (``"generate"``, ``"curate"``, ``"correct"``, ``"mix"``,
``"fit"``), so the same inputs give the same state wherever the step is called from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from stabfw.core.hooks import resolve_hook
from stabfw.core.streams import real_stream_generation, stream
from stabfw.errors import ConfigError, LoopError, format_validation_error
from stabfw.run.config import RetrainConfig
from stabfw.run.policies import TrainingSet, build_training_set

__all__ = ["GenerationStep", "StepResult", "as_retrain_config", "replay"]

_SAME = object()  # "warm-start from the generating state"


def as_retrain_config(config: RetrainConfig | dict[str, Any]) -> RetrainConfig:
    """``config`` as a validated :class:`RetrainConfig`.

    A :class:`RetrainConfig` is validated again (``model_copy(update=...)`` skips pydantic's
    checks), a mapping as the ``loop:`` section of a file is; anything else is refused.

    Raises
    ------
    ConfigError
        Naming each bad field as ``loop.<field>``.
    """
    if isinstance(config, RetrainConfig):
        raw: Any = {k: getattr(config, k) for k in RetrainConfig.model_fields}
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise ConfigError(f"config must be a stabfw.RetrainConfig or a mapping of its fields, "
                          f"got {type(config).__name__}")
    try:
        return RetrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="loop")) from None


class StepResult(NamedTuple):
    """What one generation produced (a named tuple: built once per seed-generation).

    Attributes
    ----------
    state : the fitted state of this generation
    pool : synthetic points carried to the next generation (``accumulate*``), else None
    n_real, n_synthetic : int
        Real and synthetic points of the training set it was fitted on.
    """

    state: Any
    pool: Any
    n_real: int
    n_synthetic: int


class GenerationStep:
    """One generation of ``loop`` under ``config``, for any seed.

    Parameters
    ----------
    loop : SelfConsumingLoop
    config : RetrainConfig or dict
    """

    def __init__(self, loop: Any, config: RetrainConfig | dict[str, Any]):
        self.loop = loop
        self.config = as_retrain_config(config)
        self.curate = resolve_hook(self.config.curate)
        self.correct = resolve_hook(self.config.correct)
        self.custom_mix = loop.capabilities().custom_mix
        # only these mixes draw: the others get no "mix" stream (a Generator per
        # seed-generation is a measurable share of a cheap loop's cost)
        self.mix_draws = self.custom_mix or self.config.policy == "accumulate_subsample"
        self.hooks = tuple((name, hook) for name, hook in (("curate", self.curate),
                                                           ("correct", self.correct))
                           if hook is not None)
        self._n_synthetic: dict[int, int] = {}  # size of the real set -> its batch size
        #: the loop method being called (``generate``, ``curate``, ``fit``, ...), so that a
        #: caller can say where a loop's exception came from
        self.stage: str | None = None

    @property
    def has_hooks(self) -> bool:
        """Whether curate/correct hooks act on the synthetic batch."""
        return bool(self.hooks)

    def real_data(self, seed: int, generation: int) -> Any:
        """The real data generation ``generation`` of ``seed`` mixes in (generation 0:
        what θ* is fitted on). Only ``fresh_real`` draws a new set after generation 0."""
        gen = real_stream_generation(self.config.policy, generation)
        self.stage = "real_data"
        return self.loop.real_data(stream(seed, gen, "real"))

    def initial(self, seed: int, real: Any) -> Any:
        """Generation 0: the fit on real data alone (θ*)."""
        self.stage = "fit"
        return self.loop.fit(real, None, stream(seed, 0, "fit"))

    def mix(self, seed: int, generation: int, real: Any, synthetic: Any,
            pool: Any) -> tuple[TrainingSet, Any]:
        """The training set of this generation and the pool to carry on."""
        rng = stream(seed, generation, "mix") if self.mix_draws else None
        if self.custom_mix:
            return self.loop.mix(real, synthetic, pool, self.config, rng)
        return build_training_set(self.loop, self.config, real, synthetic, pool, rng)

    def __call__(self, seed: int, generation: int, state: Any, real: Any, pool: Any,
                 n_real0: int, init: Any = _SAME) -> StepResult:
        """Retrain once: generate from ``state``, transform, mix with ``real``, fit.

        Parameters
        ----------
        seed, generation : int
            Which streams the draws come from.
        state : the generating state (generation ``generation − 1``)
        real : the real data this generation mixes in
        pool : synthetic points of earlier generations (``accumulate*``) or None
        n_real0 : int
            Size of the real set of generation 0 (λ is relative to it).
        init : optional
            The state the fit starts from when the config warm-starts (default: ``state``).
        """
        loop, cfg, s, t = self.loop, self.config, int(seed), int(generation)
        n = self._n_synthetic.get(n_real0)
        if n is None:  # once per real-set size (it validates: 0.3 µs a seed-generation)
            n = self._n_synthetic[n_real0] = cfg.n_synthetic(n_real0)
        self.stage = "generate"
        synthetic = loop.generate(state, n, stream(s, t, "generate"))
        # a short batch would change λ without a word; hooks may shrink it, generate not.
        # A loop that mixes its own training sets defines its batches (and their λ) itself
        got = n if self.custom_mix else loop.data_size(synthetic)
        if got != n:
            raise LoopError(
                f"{type(loop).__name__}.generate(state, {n}, rng) returned {got} samples at "
                f"seed {s}, generation {t}; it must return exactly n (λ = {cfg.lam:g} asks "
                f"for {n}). A curate hook is the place to drop samples", seed=s,
                generation=t, method="generate")
        for name, hook in self.hooks:
            self.stage = name
            synthetic = hook(synthetic, state=state, loop=loop, rng=stream(s, t, name),
                             real=None if cfg.fully_synthetic else real)
        self.stage = "mix"
        train, pool = self.mix(s, t, real, synthetic, pool)
        start = (state if init is _SAME else init) if cfg.warm_start else None
        self.stage = "fit"
        new_state = loop.fit(train.data, start, stream(s, t, "fit"))
        self.stage = None
        return StepResult(new_state, pool, int(train.n_real), int(train.n_synthetic))


def replay(loop: Any, config: RetrainConfig | dict[str, Any], seed: int,
           generations: int, real0: Any | None = None) -> list[StepResult]:
    """Generations ``0 .. generations`` of one seed, recomputed step by step exactly as a
    run computes them (no files). Entry 0 is the fit on real data; ``real0`` is the real
    set of generation 0 when the caller has it already."""
    step = GenerationStep(loop, config)
    real0 = step.real_data(seed, 0) if real0 is None else real0
    n0 = loop.data_size(real0)
    out = [StepResult(step.initial(seed, real0), None, n0, 0)]
    for t in range(1, generations + 1):
        real = real0 if step.config.policy != "fresh_real" else step.real_data(seed, t)
        out.append(step(seed, t, out[-1].state, real, out[-1].pool, n0))
    return out
