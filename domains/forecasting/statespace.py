"""State-space families: ETS (sktime ``AutoETS``) and ARIMA (sktime ``StatsModelsARIMA``).

Both wrap a statsmodels model, so θ is read from the statsmodels results, forecasts and
sample paths come from the same statsmodels model re-run on the conditioning history
with θ (``ETSModel.smooth`` / ``ARIMA.filter``) and its own ``simulate``.

References
----------
Hyndman, Koehler, Ord & Snyder, *Forecasting with Exponential Smoothing: The State Space
Approach*, Springer 2008 (ETS models and their simulation). Durbin & Koopman, *Time
Series Analysis by State Space Methods*, 2nd ed., OUP 2012 (ARIMA in state-space form,
simulation smoother).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sktime.forecasting.arima import StatsModelsARIMA
from sktime.forecasting.ets import AutoETS

from stabfw.domains.forecasting.family import (
    LOG_SIGMA2,
    Conditioned,
    Family,
    ForecastState,
    log_sigma2,
)
from stabfw.errors import ConfigError

__all__ = ["ARIMAFamily", "ETSFamily"]


class _AutoETS(AutoETS):
    """sktime ``AutoETS`` with ``remember_data=False`` set explicitly (see family.py)."""

    _config = {"remember_data": False}


class _StatsModelsARIMA(StatsModelsARIMA):
    """sktime ``StatsModelsARIMA`` with ``remember_data=False`` set explicitly."""

    _config = {"remember_data": False}


def _paths(sim: Any, n: int, reps: int) -> np.ndarray:
    return np.asarray(sim, dtype=float).reshape(n, reps)


# --- ETS -------------------------------------------------------------------------------
_SMOOTHING = ("smoothing_level", "smoothing_trend", "smoothing_seasonal", "damping_trend")
# AutoETS arguments that make up the statsmodels ETSModel specification
_ETS_SPEC = ("error", "trend", "damped_trend", "seasonal", "initialization_method",
             "initial_level", "initial_trend", "initial_seasonal", "bounds")


class _ETSConditioned(Conditioned):
    def __init__(self, results: Any, sigma2: float):
        self.results, self.sigma2 = results, sigma2

    def forecast(self, h: int) -> np.ndarray:
        return np.asarray(self.results.forecast(h), dtype=float)

    def simulate(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        # errors drawn here so that σ² is θ's, not a rescan of the conditioning history
        errors = rng.standard_normal((n, reps)) * np.sqrt(max(self.sigma2, 0.0))
        sim = self.results.simulate(n, anchor="end", repetitions=reps, random_errors=errors)
        return _paths(sim, n, reps)


class ETSFamily(Family):
    """Exponential smoothing state-space models (statsmodels ``ETSModel`` via AutoETS).

    θ = the smoothing parameters the model has (α, β, γ, φ) and log σ², the error
    variance (``scale``: of absolute errors for additive, of relative errors for
    multiplicative error models). The initial states stay in ``aux`` and are kept by
    ``with_params``.
    Warm start passes the previous full parameter vector as ``start_params``.
    """

    name = "ets"
    simulation = "statsmodels ETSResults.simulate (Gaussian errors with variance σ²)"
    reserved = ("start_params", "auto")

    def sktime_class(self) -> type:
        return _AutoETS

    def defaults(self) -> dict[str, Any]:
        return {"auto": False, "sp": self.sp}

    def kwargs(self, init, rng) -> dict[str, Any]:
        kw = super().kwargs(init, rng)
        if init is not None:
            kw["start_params"] = np.asarray(init.aux["full"], dtype=float)
        return kw

    def validate(self) -> None:
        if self.params.get("auto"):
            raise ConfigError("domain.forecaster_params.auto: AutoETS with auto=True picks a "
                              "new model each generation, so θ would change meaning; fix "
                              "error/trend/seasonal instead")
        super().validate()

    def _spec(self, forecaster: Any) -> dict[str, Any]:
        p = forecaster.get_params(deep=False)
        spec = {k: p[k] for k in _ETS_SPEC}
        spec["seasonal_periods"] = p["sp"]  # as AutoETS passes it
        return spec

    def extract(self, forecaster, y) -> ForecastState:
        res = forecaster._fitted_forecaster  # statsmodels ETSResults
        names = list(res.param_names)
        full = np.asarray(res.params, dtype=float)
        idx = [names.index(n) for n in _SMOOTHING if n in names]
        theta = np.append(full[idx], log_sigma2(float(res.scale)))
        return ForecastState(
            family=self.name, theta=theta,
            names=(*[names[i] for i in idx], LOG_SIGMA2),
            aux={"full": full, "index": idx, "spec": self._spec(forecaster)},
            forecaster=forecaster)

    def with_theta(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        theta = np.asarray(theta, dtype=float)
        full = state.aux["full"].copy()
        full[state.aux["index"]] = theta[:-1]
        return ForecastState(self.name, theta.copy(), state.names,
                             {**state.aux, "full": full})

    def condition(self, state, history) -> Conditioned:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        model = ETSModel(history, **state.aux["spec"])
        return _ETSConditioned(model.smooth(state.aux["full"]), float(np.exp(state.theta[-1])))

    def min_length(self) -> int:
        return max(10, 2 * self.sp + 4)

    @property
    def positive(self) -> bool:
        kw = self.params  # AutoETS defaults are additive
        return "mul" in (kw.get("error"), kw.get("trend"), kw.get("seasonal"))


# --- ARIMA -----------------------------------------------------------------------------
class _ARIMAConditioned(Conditioned):
    def __init__(self, results: Any):
        self.results = results

    def forecast(self, h: int) -> np.ndarray:
        return np.asarray(self.results.forecast(h), dtype=float)

    def simulate(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        sim = self.results.simulate(n, anchor="end", repetitions=reps, rng=rng)
        return _paths(sim, n, reps)


class ARIMAFamily(Family):
    """(S)ARIMA models (statsmodels ``ARIMA`` via sktime ``StatsModelsARIMA``).

    θ = the statsmodels parameter vector (trend terms, AR and MA coefficients, seasonal
    ones too) with its σ² entry as log σ². ``with_params`` re-filters the history with
    the given θ. Warm start passes the previous parameters as ``start_params``.
    """

    name = "arima"
    simulation = "statsmodels MLEResults.simulate (state-space simulation)"
    reserved = ("start_params",)

    def sktime_class(self) -> type:
        return _StatsModelsARIMA

    def kwargs(self, init, rng) -> dict[str, Any]:
        kw = super().kwargs(init, rng)
        if init is not None:
            kw["start_params"] = self._statsmodels_params(init)
        return kw

    @staticmethod
    def _statsmodels_params(state: ForecastState) -> np.ndarray:
        params = np.asarray(state.theta, dtype=float).copy()
        i = state.names.index(LOG_SIGMA2)
        params[i] = np.exp(params[i])
        return params

    def validate(self) -> None:
        if self.params.get("concentrate_scale"):
            raise ConfigError("domain.forecaster_params.concentrate_scale: σ² must stay a "
                              "parameter of θ; leave it False")
        super().validate()

    def extract(self, forecaster, y) -> ForecastState:
        res = forecaster._fitted_forecaster  # statsmodels ARIMAResults
        spec = {k: v for k, v in res.model._get_init_kwds().items()
                if k not in ("endog", "exog", "dates", "freq", "missing")}
        theta = np.asarray(res.params, dtype=float).copy()
        names = list(res.param_names)
        i = names.index("sigma2")
        theta[i], names[i] = log_sigma2(theta[i]), LOG_SIGMA2
        return ForecastState(family=self.name, theta=theta, names=tuple(names),
                             aux={"spec": spec}, forecaster=forecaster)

    def with_theta(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        return ForecastState(self.name, np.asarray(theta, dtype=float).copy(), state.names,
                             dict(state.aux))

    def condition(self, state, history: pd.Series) -> Conditioned:
        from statsmodels.tsa.arima.model import ARIMA

        model = ARIMA(history, **state.aux["spec"])
        return _ARIMAConditioned(model.filter(self._statsmodels_params(state)))

    def summary(self, state: ForecastState) -> dict[str, float]:
        if state.theta.size <= 8:
            return super().summary(state)
        return {"sigma2": float(np.exp(state.theta[state.names.index(LOG_SIGMA2)]))}

    def min_length(self) -> int:
        order = self.params.get("order", (1, 0, 0))
        seasonal = self.params.get("seasonal_order", (0, 0, 0, 0))
        return max(10, 2 * (sum(order) + seasonal[3] * sum(seasonal[:3])) + 4)
