"""The forecasting loop: an sktime forecaster refitted on histories holding its own output.

Mixing modes (λ = synthetic / real, counted in observations; N = length of the real
training history, n = ⌊λN⌋ the synthetic count the runner asks for):

========  ===========================================================  ==================
mode      training set of the next generation                          core policies
========  ===========================================================  ==================
extend    the real history continued by n values simulated from its    fixed_real (also
          end: N real + n synthetic, one continuous history            fresh_real, which
                                                                       equals it for a
                                                                       fixed series),
                                                                       fully_synthetic
impute    the last k = round(N·n/(N+n)) actuals replaced by values     fixed_real,
          simulated from the history before them (as when actuals      fresh_real
          are missing): N − k real + k synthetic, so k/(N − k) = λ
augment   the real history plus whole synthetic series (n values in    fixed_real,
          ⌈n/N⌉ series of equal length), pooled by one global          fresh_real,
          reduction forecaster; local forecasters fit one series and    fully_synthetic,
          cannot take it                                               accumulate
========  ===========================================================  ==================

``extend`` and ``augment`` are the core policies with this domain's containers (splice in
time, stack as a panel); ``impute`` is its own mix (:meth:`ForecastingLoop.mix`). In
``impute`` the runner's synthetic batch is a path of n values from the cut on, of which
the first k enter the training set (``n_synthetic`` records k). ``accumulate_subsample``
would subsample single observations out of a time series and is refused.

Forecasts, sample paths and metrics always condition the fitted model on the *real*
history (or, for ``impute``, the part before the cut); the held-out final window is never
part of any training set.

A loop can run a model out of its own domain: a runaway trend takes a multiplicative ETS
below zero, an explosive recursion overflows. A history the model can no longer be fitted
to (non-finite values, or values ≤ 0 for a multiplicative model) gives a *diverged* state:
θ and the metrics are NaN from that generation on, which the fixed-point analyzer reports
as divergence at that generation.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from stabfw.core.artifacts import recording_target
from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.loop import SelfConsumingLoop
from stabfw.domains.forecasting import data as hist
from stabfw.domains.forecasting.family import Conditioned, Family, ForecastState
from stabfw.domains.forecasting.metrics import interval_coverage, mase, mase_scale, smape
from stabfw.errors import ConfigError

__all__ = ["FAMILIES", "ForecastingLoop"]

#: forecaster name -> "module:Family" (imported on first use: sktime is heavy)
FAMILIES: dict[str, str] = {
    "ets": "stabfw.domains.forecasting.statespace:ETSFamily",
    "arima": "stabfw.domains.forecasting.statespace:ARIMAFamily",
    "theta": "stabfw.domains.forecasting.recursive:ThetaFamily",
    "reduction": "stabfw.domains.forecasting.recursive:ReductionFamily",
}
_MODE_POLICIES = {
    "extend": ("fixed_real", "fresh_real", "fully_synthetic"),
    "impute": ("fixed_real", "fresh_real"),
    "augment": ("fixed_real", "fresh_real", "fully_synthetic", "accumulate"),
}

Dataset = Literal["airline", "lynx", "shampoo_sales", "pbs", "uschange", "longley",
                  "macroeconomic"]


class ForecastingLoop(SelfConsumingLoop):
    """An sktime forecaster refitted on histories that contain its own simulations.

    Parameters
    ----------
    dataset : str
        A series shipped with sktime (loaded offline): ``airline``, ``lynx``,
        ``shampoo_sales``, ``pbs``, ``uschange``, ``longley``, ``macroeconomic``.
    csv : str, optional
        Read the series from this CSV file instead (``column``, ``time_column``, ``freq``
        select and index it).
    column : str, optional
        Column of a multi-column dataset or CSV.
    time_column, freq : str, optional
        CSV date column and its frequency (inferred when left out).
    log : bool
        Model the logarithm of the series; metrics are computed on the original scale.
    holdout : int
        Length of the held-out final window (never fitted; the metrics' test window).
    forecaster : {"ets", "arima", "theta", "reduction"}
        sktime ``AutoETS`` (fixed model, ``auto=False``), ``StatsModelsARIMA``,
        ``ThetaForecaster`` or a recursive reduction to a scikit-learn regressor.
    forecaster_params : dict, optional
        Constructor arguments of that sktime forecaster (e.g. ``{order: [2, 0, 0]}``,
        ``{error: add, trend: add, seasonal: add}``, ``{window_length: 13}``).
    regressor : str
        Reduction only: ``linear``, ``ridge``, ``lasso``, ``elastic_net`` (θ =
        coefficients) or ``random_forest``, ``gradient_boosting``, ``knn`` (θ = forecast
        signature).
    regressor_params : dict, optional
        Constructor arguments of the regressor.
    sp : int
        Seasonal period: passed to forecasters that take ``sp`` (ETS, Theta) unless
        ``forecaster_params`` sets it, and the lag of MASE's seasonal naive scale.
    mode : {"extend", "impute", "augment"}
        How synthetic values enter the history (module docstring).
    signature : {"params", "forecast"}
        θ is the family's parameter vector, or the point forecast over
        ``signature_horizon`` steps from the end of the real history (the functional
        signature; forced for regressors without parameters).
    signature_horizon : int, optional
        Default: ``holdout``.
    coverage : float
        Nominal coverage of the prediction interval whose empirical coverage is reported.
    pi_paths : int
        Sample paths drawn for the prediction interval.
    blas_threads : int, optional
        BLAS threads while fitting, simulating and scoring (default 1: these models are
        small, and threaded BLAS on tiny matrices is slower, badly so on a busy machine;
        ``None`` leaves the process setting alone).

    Notes
    -----
    The real series is fixed, so every seed sees the same real history and θ* is the
    same for all seeds; seeds differ in the simulated values. ``fresh_real`` therefore
    behaves as ``fixed_real``.
    """

    test_params: ClassVar[dict[str, Any]] = {"dataset": "shampoo_sales", "forecaster": "theta",
                                             "holdout": 6, "pi_paths": 50}

    def __init__(
        self,
        dataset: Dataset = "airline",
        csv: str | None = None,
        column: str | None = None,
        time_column: str | None = None,
        freq: str | None = None,
        log: bool = False,
        holdout: int = 12,
        forecaster: Literal["ets", "arima", "theta", "reduction"] = "ets",
        forecaster_params: dict[str, Any] | None = None,
        regressor: Literal["linear", "ridge", "lasso", "elastic_net", "random_forest",
                           "gradient_boosting", "knn"] = "ridge",
        regressor_params: dict[str, Any] | None = None,
        sp: int = 1,
        mode: Literal["extend", "impute", "augment"] = "extend",
        signature: Literal["params", "forecast"] = "params",
        signature_horizon: int | None = None,
        coverage: float = 0.9,
        pi_paths: int = 200,
        blas_threads: int | None = 1,
    ):
        self.dataset = dataset
        self.csv = csv
        self.column = column
        self.time_column = time_column
        self.freq = freq
        self.log = log
        self.holdout = holdout
        self.forecaster = forecaster
        self.forecaster_params = forecaster_params
        self.regressor = regressor
        self.regressor_params = regressor_params
        self.sp = sp
        self.mode = mode
        self.signature = signature
        self.signature_horizon = signature_horizon
        self.coverage = coverage
        self.pi_paths = pi_paths
        self.blas_threads = blas_threads

    # --- set-up -----------------------------------------------------------------------
    def check_params(self) -> None:
        """Every check of the set-up, before any work: the numeric parameters, the series
        (``holdout`` against its length, ``log`` against its sign), and
        ``forecaster_params`` (its keys against the sktime forecaster's, by building it
        once). Reads the series and imports sktime; fits nothing."""
        self._setup()

    def data_files(self) -> list[str]:
        """The CSV file the series is read from, when ``csv`` is given."""
        return [self.csv] if self.csv is not None else []

    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        if self.holdout < 1:
            raise ConfigError(f"domain.holdout: must be ≥ 1, got {self.holdout}")
        if self.sp < 1:
            raise ConfigError(f"domain.sp: must be ≥ 1, got {self.sp}")
        if not 0 < self.coverage < 1:
            raise ConfigError(f"domain.coverage: must lie in (0, 1), got {self.coverage}")
        if self.pi_paths < 2:
            raise ConfigError(f"domain.pi_paths: must be ≥ 2, got {self.pi_paths}")
        if self.signature_horizon is not None and self.signature_horizon < 1:
            raise ConfigError("domain.signature_horizon: must be ≥ 1")
        y = hist.load_series(self.dataset, self.csv, self.column, self.time_column, self.freq)
        if self.log and (y <= 0).any():
            raise ConfigError("domain.log: the series has values ≤ 0; it cannot be logged")
        if self.holdout >= len(y):
            raise ConfigError(f"domain.holdout: {self.holdout} leaves nothing to fit in a "
                              f"series of {len(y)} values")
        family = self._make_family()
        train = y.iloc[: len(y) - self.holdout]
        if len(train) < family.min_length():
            raise ConfigError(f"domain.holdout: {len(train)} training values left, the "
                              f"{self.forecaster} forecaster needs ≥ {family.min_length()}")
        self._family = family
        self._test = y.iloc[len(y) - self.holdout:].to_numpy(dtype=float)
        self._train = np.log(train) if self.log else train.copy()
        self._train.name = hist.NAME
        self._scale = mase_scale(train.to_numpy(dtype=float), self.sp)
        self._use_signature = self.signature == "forecast" or not family.has_params
        self._template: tuple[str, ...] | None = None  # θ names, for a diverged state
        self._metric_keys = ["mase", "smape", "pi_coverage", "pi_width"]
        self._threads = None
        if self.blas_threads is not None:
            if self.blas_threads < 1:
                raise ConfigError(f"domain.blas_threads: must be ≥ 1 or null, got "
                                  f"{self.blas_threads}")
            from threadpoolctl import ThreadpoolController

            self._threads = ThreadpoolController()  # after the family imported its BLAS users
        self._ready = True

    def _limited(self):
        """Context that caps BLAS threads at ``blas_threads`` (a no-op for ``None``)."""
        if self._threads is None:
            return contextlib.nullcontext()
        return self._threads.limit(limits=self.blas_threads, user_api="blas")

    def _make_family(self) -> Family:
        import importlib

        module, _, name = FAMILIES[self.forecaster].partition(":")
        cls = getattr(importlib.import_module(module), name)
        if self.mode == "augment" and cls.local:
            raise ConfigError(
                f"domain.mode: 'augment' pools the real and synthetic series in one global "
                f"model; the {self.forecaster} forecaster fits a single series. Use "
                "forecaster: reduction, or mode: extend / impute")
        kw: dict[str, Any] = {}
        if self.forecaster == "reduction":
            kw = {"regressor": self.regressor, "regressor_params": self.regressor_params}
        elif self.regressor_params:
            raise ConfigError("domain.regressor_params: only used by forecaster: reduction")
        family = cls(dict(self.forecaster_params or {}), sp=self.sp,
                     panel=self.mode == "augment", **kw)
        family.validate()
        return family

    def __getstate__(self) -> dict[str, Any]:
        # constructor arguments only: the set-up is redone lazily after unpickling
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @property
    def n_train(self) -> int:
        """Length N of the real training history."""
        self._setup()
        return len(self._train)

    @property
    def family(self) -> Family:
        """The forecaster family (builds the sktime forecasters, reads θ)."""
        self._setup()
        return self._family

    def capabilities(self) -> Capabilities:
        """θ goes back into a forecaster only when it is its parameters, not a signature."""
        self._setup()
        return replace(super().capabilities(), with_theta=not self._use_signature)

    # --- containers -------------------------------------------------------------------
    def data_size(self, data: Any) -> int:
        return 0 if data is None else len(data)

    def concat(self, parts: list[Any]) -> Any:
        if self.mode == "augment":
            return hist.stack(parts)
        return hist.splice(parts)

    def subsample(self, data: Any, index: np.ndarray) -> Any:
        return data.iloc[np.asarray(index, dtype=np.int64)]

    # --- the loop ---------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator) -> pd.Series:
        self._setup()
        return self._train.copy()

    def fit(self, data: pd.Series | pd.DataFrame, init: ForecastState | None,
            rng: np.random.Generator) -> ForecastState:
        self._setup()
        if isinstance(data, pd.DataFrame) and self.mode != "augment":
            raise ValueError("a panel of series can only be fitted in mode 'augment'")
        if init is not None:
            self._remember(init)
        if init is not None and (init.forecaster is None or init.diverged):
            init = None  # a with_params or diverged state has no fitted backend to start from
        values = data.to_numpy(dtype=float)
        if not np.all(np.isfinite(values)) or (self._family.positive and np.any(values <= 0)):
            return self._diverged()
        with self._limited():
            state = self._family.fit(data, init, rng)
        self._remember(state)
        return state

    def _remember(self, state: ForecastState) -> None:
        # θ's layout, for diverged states (also after a resume, which refits nothing)
        if self._template is None and state is not None:
            self._template = state.names

    def _diverged(self) -> ForecastState:
        # a simulated history the model cannot take any more (it left the model's domain):
        # θ becomes NaN, which the runner records and the analyzers report as divergence
        if self._template is None:
            raise ValueError(f"the {self.forecaster} forecaster cannot fit this history "
                             "(non-finite values, or values ≤ 0 for a multiplicative model)")
        names = self._template
        return ForecastState(self.forecaster, np.full(len(names), np.nan), names, {},
                             diverged=True)

    def imputed(self, n: int) -> int:
        """Actuals replaced in mode ``impute`` for a synthetic batch of ``n`` values."""
        N = self.n_train
        return min(N, round(N * n / (N + n))) if n > 0 else 0

    def generate(self, state: ForecastState, n: int, rng: np.random.Generator) -> Any:
        self._setup()
        N = len(self._train)
        self._remember(state)
        if n == 0:
            return self._train.iloc[:0]
        if state.diverged:
            return self._nan_batch(n)
        if self.mode == "augment":
            k = math.ceil(n / N)
            lengths = [n // k + (1 if i < n % k else 0) for i in range(k)]
            with self._limited():
                paths = self._family.sample_paths(state, lengths, self._train, rng)
            return hist.stack([pd.Series(p, index=self._train.index[: len(p)], name=hist.NAME)
                               for p in paths])
        cut = N if self.mode == "extend" else N - self.imputed(n)
        if cut < self._family.min_length():
            raise ConfigError(
                f"loop.lam: imputing {N - cut} of {N} actuals leaves {cut} real values; the "
                f"{self.forecaster} forecaster needs ≥ {self._family.min_length()}")
        with self._limited():
            path = self._conditioned(state, cut).simulate(n, 1, rng)[:, 0]
        return pd.Series(path, index=hist.future_index(self._train.index, cut, n),
                         name=hist.NAME)

    def _nan_batch(self, n: int) -> Any:
        N = len(self._train)
        if self.mode == "augment":
            k = math.ceil(n / N)
            lengths = [n // k + (1 if i < n % k else 0) for i in range(k)]
            return hist.stack([pd.Series(np.nan, index=self._train.index[:m], name=hist.NAME)
                               for m in lengths])
        cut = N if self.mode == "extend" else N - self.imputed(n)
        return pd.Series(np.nan, index=hist.future_index(self._train.index, cut, n),
                         name=hist.NAME)

    def mix(self, real, synthetic, pool, config, rng):
        from stabfw.run.policies import TrainingSet, build_training_set

        allowed = _MODE_POLICIES[self.mode]
        if config.policy not in allowed:
            raise ConfigError(f"loop.policy: {config.policy!r} does not apply to mode "
                              f"{self.mode!r}; use one of {', '.join(allowed)}")
        if self.mode != "impute":
            return build_training_set(self, config, real, synthetic, pool, rng)
        k = self.imputed(self.data_size(synthetic))
        data = hist.splice([real, synthetic.iloc[:k]])
        return TrainingSet(data, len(data) - k, k), None

    def _conditioned(self, state: ForecastState, length: int) -> Conditioned:
        # the next generation's generate() conditions on the same history as this
        # generation's metrics(): keep the backend result on the state
        key = ("conditioned", length)
        if key not in state.cache:
            state.cache[key] = self._family.condition(state, self._train.iloc[:length])
        return state.cache[key]

    def params(self, state: ForecastState) -> np.ndarray:
        self._setup()
        if not self._use_signature:
            return np.asarray(state.theta, dtype=float)
        h = self.signature_horizon or self.holdout
        if state.diverged:
            return np.full(h, np.nan)
        with self._limited():
            return np.asarray(self._conditioned(state, len(self._train)).forecast(h),
                              dtype=float)

    def param_names(self, state: ForecastState) -> list[str]:
        """A name per entry of :meth:`params`."""
        self._setup()
        if not self._use_signature:
            return list(state.names)
        return [f"forecast_h{h}" for h in range(1, (self.signature_horizon or self.holdout) + 1)]

    def with_params(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        self._setup()
        if self._use_signature:
            raise NotImplementedError(
                "θ is a forecast signature here; no model can be rebuilt from it "
                "(use signature: params with a parametric forecaster)")
        if state.diverged:
            return self._diverged()
        return self._family.with_theta(state, np.asarray(theta, dtype=float))

    def set_run_dir(self, path: Any) -> None:
        """Called by the runner: the forecasts of the first seeds are recorded there, for
        the report's fan chart."""
        self._run_dir = path

    def _record(self, rng: np.random.Generator, point: np.ndarray, paths: np.ndarray) -> None:
        # only the runner's metric draws name a (seed, generation); analyzers' do not
        from stabfw.domains.forecasting.figures import RECORDED_SEEDS, record_forecast

        where = recording_target(getattr(self, "_run_dir", None), rng,
                                 self.__dict__.setdefault("_recorded_seeds", []), RECORDED_SEEDS)
        if where is None:
            return
        lo, hi = np.quantile(paths, [(1 - self.coverage) / 2, (1 + self.coverage) / 2], axis=1)
        record_forecast(self._run_dir, *where, point, lo, hi)

    def report_figures(self, runs):
        """A fan chart per λ: history, the real future, forecasts of generations 0, middle
        and last with their intervals."""
        from stabfw.domains.forecasting.figures import fan_chart

        self._setup()
        train = self._train.to_numpy(dtype=float)
        history = np.exp(train) if self.log else train
        return fan_chart(runs, history, self._test, self.coverage)

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        out = {
            "mase": MetricInfo("error", "lower", "mean absolute scaled error"),
            "smape": MetricInfo("error", "lower", "symmetric MAPE (%)"),
            "pi_coverage": MetricInfo("quality", None, "empirical prediction-interval coverage"),
            "pi_width": MetricInfo("diversity", None, "mean prediction-interval width"),
        }
        # the fitted parameters' columns are known once a state has been scored
        for k in getattr(self, "_metric_keys", []):
            out.setdefault(k, MetricInfo("other"))
        return out

    def metrics(self, state: ForecastState, rng: np.random.Generator) -> dict[str, float]:
        self._setup()
        if state.diverged:
            return {k: math.nan for k in self._metric_keys}
        h = self.holdout
        with self._limited():
            cond = self._conditioned(state, len(self._train))
            point = cond.forecast(h)
            paths = cond.simulate(h, self.pi_paths, rng)
        if self.log:
            point, paths = np.exp(point), np.exp(paths)
        cov, width = interval_coverage(self._test, paths, self.coverage)
        self._record(rng, point, paths)
        out = {"mase": mase(self._test, point, self._scale), "smape": smape(self._test, point),
               "pi_coverage": cov, "pi_width": width}
        out.update(self._family.summary(state))
        self._metric_keys = list(out)
        return out
