"""Families without a library simulator: Theta and reduction to regression.

Both draw sample paths by recursive one-step forecasting with bootstrapped in-sample
residuals: each step adds a residual drawn with replacement from the fit's own one-step
residuals (rescaled so that their mean square is θ's σ² = exp(log σ²)) and feeds the
result back.

* **Theta** (sktime ``ThetaForecaster``) is simple exponential smoothing with drift
  (Hyndman & Billah 2003). sktime forecasts the deseasonalised series from origin t as
  ``L_t + b h`` with ``L_t = ℓ_t + b (1 − (1 − α)^t)/α`` (ℓ_t the SES level, α its
  smoothing level, b the drift: half the least-squares slope); the in-sample residuals
  are its one-step errors ``e_t = y_t − (L_{t−1} + b)``. Paths start from ``L_n`` and
  follow SES with drift, ``y = L + b + e`` then ``L ← L + b + α e``, so that their mean
  is sktime's point forecast; they are reseasonalised with the fitted seasonal factors.
* **Reduction** (sktime ``make_reduction``'s recursive tabular forecaster): the fitted
  regressor predicts the next value from the last ``window_length`` values; paths
  iterate it with a bootstrapped residual added at every step. Point forecasts iterate
  it without noise, which is what sktime's ``predict`` does.

References
----------
Assimakopoulos & Nikolopoulos, "The theta model: a decomposition approach to
forecasting", IJF 16(4), 2000. Hyndman & Billah, "Unmasking the Theta method", IJF
19(2), 2003. Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall
1993, §8.5 (bootstrapping residuals of time-series models). Bontempi, Ben Taieb &
Le Borgne, "Machine learning strategies for time series forecasting", eBISS 2012
(recursive reduction).
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from sktime.forecasting.compose import RecursiveTabularRegressionForecaster
from sktime.forecasting.theta import ThetaForecaster

from stabfw.domains.forecasting.data import future_index, series_list
from stabfw.domains.forecasting.family import (
    LOG_SIGMA2,
    Conditioned,
    Family,
    ForecastState,
    log_sigma2,
    with_sigma2_scale,
)
from stabfw.errors import ConfigError

__all__ = ["REGRESSORS", "ReductionFamily", "ThetaFamily"]


class _ThetaForecaster(ThetaForecaster):
    """sktime ``ThetaForecaster`` with ``remember_data=False`` set explicitly (see family.py)."""

    _config = {"remember_data": False}


class _RecursiveTabularRegressionForecaster(RecursiveTabularRegressionForecaster):
    """sktime's recursive reduction forecaster with ``remember_data=False`` set explicitly."""

    _config = {"remember_data": False}


def _bootstrap(residuals: np.ndarray, scale: float, shape: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    if residuals.size == 0 or scale == 0.0:
        return np.zeros(shape)
    return scale * rng.choice(residuals, size=shape, replace=True)


# --- Theta -----------------------------------------------------------------------------
def _ses_levels(d: np.ndarray, alpha: float, l0: float) -> np.ndarray:
    """SES levels ℓ_0..ℓ_n of ``ℓ_t = (1 − α) ℓ_{t−1} + α d_t`` from ℓ_0 = l0."""
    out, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], d, zi=[(1.0 - alpha) * l0])
    return np.concatenate([[l0], out])


def _theta_origins(d: np.ndarray, alpha: float, l0: float, drift: float) -> np.ndarray:
    """sktime's Theta forecast origins L_0..L_n: ``ℓ_t + b (1 − (1 − α)^t)/α``."""
    t = np.arange(d.size + 1, dtype=float)
    # sktime drops the (1 − (1 − α)^t)/α term when SES is constant (α ≈ 0)
    c = np.zeros_like(t) if np.isclose(alpha, 0.0) else (1 - (1 - alpha) ** t) / alpha
    return _ses_levels(d, alpha, l0) + drift * c


class _Seasonality:
    """Apply or remove the fitted seasonal factors of sktime's ``Deseasonalizer``."""

    def __init__(self, deseasonalizer: Any | None):
        self.des = deseasonalizer
        self.mult = deseasonalizer is not None and deseasonalizer.model == "multiplicative"

    def remove(self, y: pd.Series) -> np.ndarray:
        return y.to_numpy() if self.des is None else self.des.transform(y).to_numpy()

    def factors(self, index: pd.Index) -> np.ndarray:
        if self.des is None:
            return np.zeros(len(index))
        base = pd.Series(np.ones(len(index)) if self.mult else np.zeros(len(index)), index=index)
        return self.des.inverse_transform(base).to_numpy()

    def apply(self, d: np.ndarray, index: pd.Index) -> np.ndarray:
        f = self.factors(index).reshape((-1,) + (1,) * (d.ndim - 1))
        return d * f if self.mult else d + f


class _ThetaConditioned(Conditioned):
    def __init__(self, state: ForecastState, history: pd.Series):
        alpha, drift, log_s2 = (float(v) for v in state.theta)
        sigma2 = float(np.exp(log_s2))
        self.alpha, self.drift = alpha, drift
        self.season = _Seasonality(state.aux["deseasonalizer"])
        d = self.season.remove(history)
        self.n, self.index = d.size, history.index
        self.origin = _theta_origins(d, alpha, state.aux["initial_level"], drift)[-1]
        self.residuals = state.residuals
        self.scale = with_sigma2_scale(state.residuals, sigma2)

    def forecast(self, h: int) -> np.ndarray:
        d = self.origin + self.drift * np.arange(1, h + 1, dtype=float)
        return self.season.apply(d, future_index(self.index, self.n, h))

    def simulate(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        e = _bootstrap(self.residuals, self.scale, (n, reps), rng)
        # y_i = L_i + b + e_i and L_{i+1} = L_i + b + α e_i, summed in closed form
        origins = self.origin + self.drift * np.arange(n)[:, None] \
            + self.alpha * np.vstack([np.zeros((1, reps)), np.cumsum(e, axis=0)[:-1]])
        return self.season.apply(origins + self.drift + e, future_index(self.index, self.n, n))


class ThetaFamily(Family):
    """The Theta method (sktime ``ThetaForecaster``).

    θ = (α, b, log σ²): the SES smoothing level, the drift and the log mean square of
    the in-sample one-step forecast errors. The initial level and the seasonal factors stay
    in ``aux`` and are kept by ``with_params``.
    """

    name = "theta"
    simulation = "recursive SES-with-drift forecasts + bootstrapped in-sample residuals"

    def sktime_class(self) -> type:
        return _ThetaForecaster

    def defaults(self) -> dict[str, Any]:
        return {"sp": self.sp}

    def validate(self) -> None:
        if not isinstance(self.params.get("deseasonalize", True), bool):
            raise ConfigError("domain.forecaster_params.deseasonalize: must be true or false")
        super().validate()

    def extract(self, forecaster, y) -> ForecastState:
        res = forecaster._fitted_forecaster  # statsmodels SES results
        alpha = float(res.params["smoothing_level"])
        l0 = float(res.params["initial_level"])
        drift = float(forecaster.trend_)
        des = forecaster.deseasonalizer_ if forecaster.deseasonalize else None
        d = _Seasonality(des).remove(y)
        residuals = d - (_theta_origins(d, alpha, l0, drift)[:-1] + drift)
        theta = np.array([alpha, drift, log_sigma2(float(np.mean(residuals**2)))])
        return ForecastState(self.name, theta, ("smoothing_level", "drift", LOG_SIGMA2),
                             {"initial_level": l0, "deseasonalizer": des},
                             residuals=residuals, forecaster=forecaster)

    def with_theta(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        return ForecastState(self.name, np.asarray(theta, dtype=float).copy(), state.names,
                             dict(state.aux), residuals=state.residuals)

    def condition(self, state, history) -> Conditioned:
        return _ThetaConditioned(state, history)

    def min_length(self) -> int:
        return max(10, 2 * self.sp + 2)

    @property
    def positive(self) -> bool:
        kw = {**self.defaults(), **self.params}
        return (kw.get("deseasonalize", True) and kw.get("sp", 1) > 1
                and kw.get("deseasonalize_model", "multiplicative") == "multiplicative")


# --- reduction -------------------------------------------------------------------------
#: scikit-learn regressors by config name; the first four are linear (θ = coefficients)
REGRESSORS: dict[str, tuple[str, str]] = {
    "linear": ("sklearn.linear_model", "LinearRegression"),
    "ridge": ("sklearn.linear_model", "Ridge"),
    "lasso": ("sklearn.linear_model", "Lasso"),
    "elastic_net": ("sklearn.linear_model", "ElasticNet"),
    "random_forest": ("sklearn.ensemble", "RandomForestRegressor"),
    "gradient_boosting": ("sklearn.ensemble", "GradientBoostingRegressor"),
    "knn": ("sklearn.neighbors", "KNeighborsRegressor"),
}
_LINEAR = ("linear", "ridge", "lasso", "elastic_net")


def _windows(values: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Lag matrix (column k = lag k + 1, most recent first) and targets of one series."""
    n = values.size - w
    if n <= 0:
        return np.empty((0, w)), np.empty(0)
    X = np.column_stack([values[w - k - 1: w - k - 1 + n] for k in range(w)])
    return X, values[w:]


class _ReductionConditioned(Conditioned):
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], window: np.ndarray,
                 residuals: np.ndarray, scale: float):
        self.predict, self.window = predict, window
        self.residuals, self.scale = residuals, scale

    def _run(self, n: int, e: np.ndarray) -> np.ndarray:
        reps = e.shape[1]
        X = np.tile(self.window, (reps, 1))
        out = np.empty((n, reps))
        for i in range(n):
            out[i] = self.predict(X) + e[i]
            X = np.column_stack([out[i], X[:, :-1]])
        return out

    def forecast(self, h: int) -> np.ndarray:
        return self._run(h, np.zeros((h, 1)))[:, 0]

    def simulate(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        return self._run(n, _bootstrap(self.residuals, self.scale, (n, reps), rng))


class ReductionFamily(Family):
    """Recursive reduction to a scikit-learn regressor on the last ``window_length`` values.

    θ (linear regressors) = the lag coefficients, most recent lag first, the intercept
    and log σ² (σ²: mean square of the in-sample one-step residuals). Non-linear regressors have
    no usable parameter vector: the loop then uses the forecast signature. Pooling is
    ``local`` on one history and ``global`` (one regressor for every series of a panel)
    in mode ``augment``.
    """

    name = "reduction"
    simulation = "recursive regressor forecasts + bootstrapped in-sample residuals"
    local = False
    reserved = ("estimator", "pooling", "transformers")

    def __init__(self, params, sp=1, panel=False, regressor="ridge", regressor_params=None):
        super().__init__(params, sp, panel)
        self.regressor = regressor
        self.regressor_params = dict(regressor_params or {})

    @property
    def window(self) -> int:
        return int(self.params.get("window_length", 12))

    def sktime_class(self) -> type:
        return _RecursiveTabularRegressionForecaster

    def _regressor(self, rng: np.random.Generator | None):
        if self.regressor not in REGRESSORS:
            raise ConfigError(f"domain.regressor: unknown {self.regressor!r}; choose one of "
                              f"{', '.join(REGRESSORS)}")
        module, name = REGRESSORS[self.regressor]
        cls = getattr(importlib.import_module(module), name)
        kw = dict(self.regressor_params)
        if ("random_state" in inspect.signature(cls).parameters and "random_state" not in kw
                and rng is not None):
            kw["random_state"] = int(rng.integers(2**31 - 1))
        try:
            return cls(**kw)
        except TypeError as err:
            raise ConfigError(f"domain.regressor_params: {err}") from None

    def kwargs(self, init, rng) -> dict[str, Any]:
        return {"window_length": self.window, **self.params,
                "estimator": self._regressor(rng),
                "pooling": "global" if self.panel else "local"}

    def validate(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ConfigError("domain.forecaster_params.window_length: must be an integer ≥ 1")
        self._regressor(None)
        super().validate()

    @property
    def has_params(self) -> bool:
        return self.regressor in _LINEAR

    def _predictor(self, estimator: Any, features: list[str] | None):
        if self.has_params:
            # what LinearModel.predict computes, without its per-call input validation
            # (the recursion calls it once per simulated step)
            coef = np.asarray(estimator.coef_, dtype=float).ravel()
            coef = coef if features is not None else coef[::-1]
            intercept = float(np.ravel(estimator.intercept_)[0])
            return lambda X: X @ coef + intercept
        if features is None:  # local pooling: columns are the window, oldest first
            return lambda X: estimator.predict(X[:, ::-1])
        return lambda X: estimator.predict(pd.DataFrame(X, columns=features))

    def extract(self, forecaster, y) -> ForecastState:
        est = forecaster.estimator_
        w = int(forecaster.window_length_)
        features = None
        if self.panel:  # global pooling: WindowSummarizer lag features lag_1..lag_w
            features = [str(c) for c in est.feature_names_in_]
            if [f.rsplit("_lag_", 1)[-1] for f in features] != [str(k) for k in range(1, w + 1)]:
                raise RuntimeError(f"unexpected reduction features {features}; expected "
                                   f"lags 1..{w} in order")
        predict = self._predictor(est, features)
        parts = [_windows(s.to_numpy(dtype=float), w) for s in series_list(y)]
        X = np.vstack([p[0] for p in parts])
        target = np.concatenate([p[1] for p in parts])
        residuals = target - predict(X)
        sigma2 = float(np.mean(residuals**2))
        aux = {"estimator": est, "window": w, "features": features, "sigma2": sigma2}
        if not self.has_params:
            return ForecastState(self.name, np.empty(0), (), aux, residuals, forecaster)
        coef = np.asarray(est.coef_, dtype=float).ravel()
        coef = coef if features is not None else coef[::-1]
        theta = np.concatenate([coef, [float(np.ravel(est.intercept_)[0]),
                                       log_sigma2(sigma2)]])
        names = (*[f"lag_{k}" for k in range(1, w + 1)], "intercept", LOG_SIGMA2)
        return ForecastState(self.name, theta, names, aux, residuals, forecaster)

    def with_theta(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        if not self.has_params:
            return super().with_theta(state, theta)
        theta = np.asarray(theta, dtype=float)
        w = state.aux["window"]
        est = copy.deepcopy(state.aux["estimator"])
        coef = theta[:w] if state.aux["features"] is not None else theta[:w][::-1]
        est.coef_ = coef.reshape(np.shape(est.coef_)).copy()
        est.intercept_ = type(est.intercept_)(theta[w]) if np.ndim(est.intercept_) == 0 \
            else np.full(np.shape(est.intercept_), theta[w])
        aux = {**state.aux, "estimator": est, "sigma2": float(np.exp(theta[w + 1]))}
        return ForecastState(self.name, theta.copy(), state.names, aux, state.residuals)

    def _conditioned(self, state: ForecastState, window: np.ndarray) -> _ReductionConditioned:
        aux = state.aux
        return _ReductionConditioned(self._predictor(aux["estimator"], aux["features"]),
                                     window, state.residuals,
                                     with_sigma2_scale(state.residuals, aux["sigma2"]))

    def condition(self, state, history) -> Conditioned:
        w = state.aux["window"]
        if len(history) < w:
            raise ValueError(f"a history of {len(history)} values is shorter than "
                             f"window_length={w}")
        return self._conditioned(state, history.to_numpy(dtype=float)[-w:][::-1])

    def sample_paths(self, state, lengths, like, rng) -> list[np.ndarray]:
        # whole synthetic series: start from the first real window, run a burn-in of
        # 5 windows so that the start is forgotten, keep what follows
        w = state.aux["window"]
        burn = 5 * w
        cond = self._conditioned(state, like.to_numpy(dtype=float)[:w][::-1])
        paths = cond.simulate(burn + max(lengths), len(lengths), rng)
        return [paths[burn: burn + n, k] for k, n in enumerate(lengths)]

    def summary(self, state: ForecastState) -> dict[str, float]:
        out = {"sigma2": state.aux["sigma2"]}
        if self.has_params:
            w = state.aux["window"]
            out = {"coef_sum": float(state.theta[:w].sum()),
                   "intercept": float(state.theta[w]), **out}
        return out

    def min_length(self) -> int:
        return self.window + 5
