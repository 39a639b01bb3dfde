"""The interface a domain implements: a learner retrained on its own outputs."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stabfw.core import containers
from stabfw.core.capabilities import DIFFERENTIABLE_METHODS, Capabilities, MetricInfo
from stabfw.core.parameters import get_params, set_params

__all__ = ["SelfConsumingLoop", "VectorizedLoop"]


class SelfConsumingLoop(abc.ABC):
    """A model family retrained, generation after generation, on data it produced.

    Subclasses implement four methods (and optionally a few more); the runner, the
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
    theta(state) — or its alias params(state)
        A 1-D float vector θ that represents the state (parameters, or a functional
        signature such as outputs on a fixed probe set).

    Optional
    --------
    check_params() / data_files() / size_hint()
        Up-front checks of the constructor parameters, the data files whose contents a
        run's fingerprint holds, and cheap sizes for the run-size estimate.
    with_theta(state, theta) — or its alias with_params(state, theta)
        The state with θ substituted; enables the retraining map, fixed-point solves and
        finite-difference Jacobians.
    metrics(state, rng)
        ``dict[str, float]`` of domain metrics for one fitted state.
    concat / subsample / data_size
        Container operations; the defaults handle numpy, torch, pandas and lists.
    mix(real, synthetic, pool, config, rng)
        Build the training set yourself instead of the config's mixing policy (e.g. a
        forecaster whose missing actuals are imputed by its own forecasts); return
        ``(TrainingSet, pool)`` and document how it maps onto λ.
    score(batch, state)
        One float per sample, higher is better (the ``top_fraction`` hook).
    report_figures(runs)
        Domain figures (sample grids, fan charts, …) for the report page.
    loss / sample / draw_noise
        The differentiable protocol (:mod:`stabfw.core.differentiable`).

    What a loop can do is read from these methods once, in :meth:`capabilities`.

    Notes
    -----
    θ is ``theta(state)``; the loop's *parameters* are its constructor arguments
    (:meth:`get_params`), as in scikit-learn. ``__init__`` only stores its arguments (so
    that a loop can be rebuilt from its config and cloned), and expensive set-up happens
    lazily, in attributes whose names start with ``_``.
    """

    #: Small constructor arguments that make the domain cheap enough for conformance
    #: tests (:func:`stabfw.run.conformance.check_conformance` and the test suite).
    test_params: ClassVar[dict[str, Any]] = {}

    def __new__(cls, *args: Any, **kwargs: Any):
        # theta and params are aliases: a concrete loop must implement one of them
        if cls.theta is SelfConsumingLoop.theta and cls.params is SelfConsumingLoop.params:
            raise TypeError(f"Can't instantiate {cls.__name__}: implement theta(state) "
                            "(or its alias params(state)), the 1-D float vector θ of a state")
        return super().__new__(cls)

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

    def theta(self, state: Any) -> np.ndarray:
        """The 1-D float vector θ that represents ``state`` (implement this or ``params``)."""
        return self.params(state)

    def params(self, state: Any) -> np.ndarray:
        """Alias of :meth:`theta` (the name of the API sketch)."""
        return self.theta(state)

    # --- optional -------------------------------------------------------------------
    def with_theta(self, state: Any, theta: np.ndarray) -> Any:
        """``state`` with its θ replaced by ``theta`` (implement this or ``with_params``)."""
        if type(self).with_params is not SelfConsumingLoop.with_params:
            return self.with_params(state, theta)
        raise NotImplementedError(
            f"{type(self).__name__} does not implement with_theta(state, theta) (alias "
            "with_params); the retraining map and finite-difference Jacobians need it")

    def with_params(self, state: Any, theta: np.ndarray) -> Any:
        """Alias of :meth:`with_theta`."""
        if type(self).with_theta is not SelfConsumingLoop.with_theta:
            return self.with_theta(state, theta)
        return SelfConsumingLoop.with_theta(self, state, theta)

    def metrics(self, state: Any, rng: np.random.Generator) -> dict[str, float]:
        """Domain metrics of one fitted state (none by default)."""
        return {}

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric of :meth:`metrics` measures, by name (optional).

        A domain that declares its metrics lets ``stabfw validate`` check the metric
        names a config uses before any work, and lets verdicts and reports tell a
        diversity measure heading to zero (collapse) from an error growing. The default
        declares none.
        """
        return {}

    def check_params(self) -> None:
        """Cheap checks of the constructor parameters, before any work (optional).

        The one place for a domain's up-front checks that a type annotation cannot
        express: lengths that must agree (``true_mean`` and ``dim``), a matrix that must be
        positive definite, a data file that must exist and hold numbers of the right
        shape. The registry's validation calls it, so ``stabfw validate``, ``stabfw run``
        and :func:`stabfw.make` refuse exactly the same parameters, and
        :func:`stabfw.run_loop` calls it for loops built directly in Python.

        Raise :class:`~stabfw.ConfigError` with a message that starts with the parameter's
        dotted path (``domain.true_mean: ...``) and says what is accepted. Keep it cheap:
        read a data file's header or a small file, never fit or sample. The default checks
        nothing.
        """
        return None

    def data_files(self) -> list[Any]:
        """The files this loop reads its data from (optional; default none).

        Their contents (SHA-256) are part of the run's fingerprint: a run resumed after one
        of them changed is refused instead of splicing two data sets. Return paths (``str``
        or :class:`pathlib.Path`) of regular files; the default is an empty list.
        """
        return []

    def size_hint(self) -> dict[str, int]:
        """Sizes known without any work, for the size estimate of ``stabfw validate`` and
        :func:`stabfw.run_loop` (optional).

        Keys (each optional): ``n_real`` (real samples of generation 0) and ``dim_theta``
        (length of θ). The default knows neither; the estimate then assumes small values
        and says so.
        """
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
        """Build ``(TrainingSet, pool)`` yourself (optional; see the class docstring).

        Without an override the generation step applies the config's mixing policy
        (:func:`stabfw.run.policies.build_training_set`).
        """
        raise NotImplementedError(f"{type(self).__name__} mixes by the config's policy")

    def report_figures(self, runs: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """Domain figures for a report page (optional; default none).

        Parameters
        ----------
        runs : mapping of str to path
            Label → run directory: one entry on a run's page, one per cell (labelled by
            its swept values, e.g. ``"λ = 0.5"``) on a sweep's page. Read what the run left
            there (``Trajectory.load(dir)``, or files the domain wrote itself through
            :meth:`set_run_dir`, such as sample grids); do not run the loop again.

        Returns
        -------
        list of (str, path or matplotlib Figure)
            ``(title, figure)`` pairs in display order: a PNG file, or a ``Figure`` that
            the page renders and closes. The page embeds each one under its title.
        """
        return []

    def figures(self, trajectory: Any, out_dir: Any) -> list[Any]:
        """Draw domain figures of a finished run into ``out_dir`` (optional; the older hook,
        still shown on a run's page — prefer :meth:`report_figures`).

        Return the paths written; the report shows them. The default draws none.
        """
        return []

    # --- what the loop can do ---------------------------------------------------------
    def capabilities(self) -> Capabilities:
        """What this loop can do, read off the methods it implements.

        Override it (``dataclasses.replace(super().capabilities(), ...)``) when an
        ability depends on the loop's parameters.
        """
        cls, base = type(self), SelfConsumingLoop
        return Capabilities(
            with_theta=(cls.with_theta is not base.with_theta
                        or cls.with_params is not base.with_params),
            differentiable=all(callable(getattr(self, m, None)) for m in DIFFERENTIABLE_METHODS),
            vectorized=isinstance(self, VectorizedLoop),
            score=callable(getattr(self, "score", None)),
            custom_mix=cls.mix is not base.mix,
            figures=(cls.figures is not base.figures
                     or cls.report_figures is not base.report_figures),
        )

    @property
    def supports_with_params(self) -> bool:
        """Whether θ can be substituted (``capabilities().with_theta``)."""
        return self.capabilities().with_theta

    # --- scikit-learn conventions -----------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments, scikit-learn style (``sklearn.base.clone`` works)."""
        return get_params(self, deep=deep)

    def set_params(self, **params: Any) -> SelfConsumingLoop:
        """Set constructor arguments; lazily built state is rebuilt on next use."""
        return set_params(self, **params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({args})"


class VectorizedLoop(abc.ABC):
    """Optional mix-in: advance every seed of a run in one array operation.

    A domain that implements it must give, for each seed, the same numbers as the
    per-seed path of :func:`stabfw.run_loop` (draw through :mod:`stabfw.core.streams`:
    the key of stream ``(seed, generation, purpose)`` is ``stream_keys([seed],
    generation, purpose)``). The runner uses it when ``loop.vectorize`` is ``"auto"``
    and :meth:`supports_vectorized` accepts the config. See ``docs/analysis.md`` for a
    worked example.
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

    def theta_batch(self, batch: Any) -> np.ndarray:
        """θ of every seed, shape ``(n_seeds, d)`` (implement this or ``params_batch``)."""
        return self.params_batch(batch)

    def params_batch(self, batch: Any) -> np.ndarray:
        """Alias of :meth:`theta_batch`."""
        if type(self).theta_batch is VectorizedLoop.theta_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither theta_batch "
                                      "nor params_batch")
        return self.theta_batch(batch)

    def metrics_batch(self, batch: Any) -> dict[str, np.ndarray]:
        """Domain metrics of every seed, each of shape ``(n_seeds,)``."""
        return {}
