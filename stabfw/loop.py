"""The interface a domain implements: a learner retrained on its own outputs."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from stabfw import containers

__all__ = ["SelfConsumingLoop", "VectorizedLoop"]


class SelfConsumingLoop(abc.ABC):
    """A model family retrained, generation after generation, on data it produced.

    Subclasses implement four methods (and optionally three more); the runner, the
    mixing policies and every analyzer work through them alone.

    Required
    --------
    real_data(rng)
        The real training set. Must be a deterministic function of ``rng``: the runner
        calls it once per replicate for the ``fixed_real`` policy and once per generation
        (with a fresh stream) for ``fresh_real``, and again when resuming.
    fit(data, init, rng)
        A fitted state. ``init`` is the previous generation's state (warm start) or
        ``None`` (cold start). Must not modify ``init`` in place.
    generate(state, n, rng)
        ``n`` synthetic samples from a fitted state.
    params(state)
        A 1-D float vector θ that represents the state (parameters, or a functional
        signature such as outputs on a fixed probe set).

    Optional
    --------
    with_params(state, theta)
        The state with θ substituted; enables finite-difference Jacobians.
    metrics(state, rng)
        ``dict[str, float]`` of domain metrics for one fitted state.
    concat / subsample / data_size
        Container operations; the defaults handle numpy, torch, pandas and lists.
    mix(real, synthetic, pool, config, rng)
        Build the training set; the default follows ``config.policy``
        (:func:`stabfw.policies.build_training_set`). Override it for a domain-specific
        way of mixing (e.g. a forecaster whose missing actuals are imputed by its own
        forecasts) and document how it maps onto λ.

    Notes
    -----
    Follow the scikit-learn convention: ``__init__`` only stores its arguments (so that
    a loop can be rebuilt from its config), and expensive set-up happens lazily.
    """

    #: Small constructor arguments that make the domain cheap enough for conformance
    #: tests (``stabfw.checks.check_loop`` and the test suite use them).
    test_params: ClassVar[dict[str, Any]] = {}

    # --- required -------------------------------------------------------------------
    @abc.abstractmethod
    def real_data(self, rng: np.random.Generator) -> Any:
        """Return the real training set (deterministic given ``rng``)."""

    @abc.abstractmethod
    def fit(self, data: Any, init: Any | None, rng: np.random.Generator) -> Any:
        """Fit a state on ``data``, warm-started from ``init`` when it is not ``None``."""

    @abc.abstractmethod
    def generate(self, state: Any, n: int, rng: np.random.Generator) -> Any:
        """Return ``n`` synthetic samples from ``state``."""

    @abc.abstractmethod
    def params(self, state: Any) -> np.ndarray:
        """Return the 1-D float vector θ that represents ``state``."""

    # --- optional -------------------------------------------------------------------
    def metrics(self, state: Any, rng: np.random.Generator) -> dict[str, float]:
        """Domain metrics of one fitted state (none by default)."""
        return {}

    def data_size(self, data: Any) -> int:
        """Number of samples in a data container."""
        return containers.size(data)

    def concat(self, parts: list[Any]) -> Any:
        """Concatenate data containers along the sample axis."""
        return containers.concat(parts)

    def subsample(self, data: Any, index: np.ndarray) -> Any:
        """The samples of ``data`` at integer positions ``index``."""
        return containers.take(data, index)

    def set_run_dir(self, path: Any) -> None:
        """Called by the runner with the run directory before generation 0.

        Domains that write artifacts of their own (sample grids, cached feature
        extractors) keep the path and write there; the default ignores it.
        """
        return None

    def mix(self, real: Any, synthetic: Any, pool: Any, config: Any, rng: np.random.Generator):
        """Return ``(TrainingSet, pool)`` for the next fit (see :mod:`stabfw.policies`)."""
        from stabfw.policies import build_training_set

        return build_training_set(self, config, real, synthetic, pool, rng)

    @property
    def supports_with_params(self) -> bool:
        """Whether the domain implements :meth:`with_params`."""
        return type(self).with_params is not SelfConsumingLoop.with_params

    def with_params(self, state: Any, theta: np.ndarray) -> Any:
        """Return ``state`` with its θ replaced by ``theta`` (optional)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement with_params(state, theta); "
            "finite-difference Jacobians need it"
        )

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, scikit-learn style (used to record the resolved config)."""
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name in sig.parameters
            if name != "self" and hasattr(self, name)
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class VectorizedLoop(abc.ABC):
    """Optional mix-in: advance every seed of a run in one array operation.

    A domain that implements it must give, for each seed, the same numbers as the
    per-seed path of :func:`stabfw.run_loop` (draw through :mod:`stabfw.streams`).
    The runner uses it when ``vectorize`` is ``"auto"`` and :meth:`supports_vectorized`
    accepts the config.
    """

    @abc.abstractmethod
    def supports_vectorized(self, config: Any) -> str | None:
        """``None`` when ``config`` can be vectorised, else the reason it cannot."""

    @abc.abstractmethod
    def init_batch(self, seeds: np.ndarray, config: Any) -> Any:
        """Fit θ* on the real data of every seed; return an opaque batch state."""

    @abc.abstractmethod
    def step_batch(self, batch: Any, seeds: np.ndarray, generation: int, config: Any) -> Any:
        """Advance every seed from ``generation - 1`` to ``generation``."""

    @abc.abstractmethod
    def params_batch(self, batch: Any) -> np.ndarray:
        """θ of every seed, shape ``(n_seeds, d)``."""

    def metrics_batch(self, batch: Any) -> dict[str, np.ndarray]:
        """Domain metrics of every seed, each of shape ``(n_seeds,)``."""
        return {}
