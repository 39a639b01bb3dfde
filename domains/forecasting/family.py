"""What every forecaster family provides: fit, θ extraction, conditioning and simulation.

``get_fitted_params()`` is inconsistent across sktime forecasters (some omit smoothing
parameters, some return nothing), so each family reads its backend's fitted object and
returns a :class:`ForecastState` with a flat parameter vector θ and the few extra pieces
(``aux``) needed to forecast and simulate from θ on any history.

Forecasts and simulations are always *conditioned* on a history chosen by the loop (the
real history, or a prefix of it when actuals are imputed), never on whatever history the
model was last fitted on: a model refitted on a history that runs past the held-out
window is still judged by what it forecasts from the real data.

sktime 1.2 warns from ``BaseForecaster.__init__`` that the default of the
``remember_data`` config will change, and ``fit`` re-runs ``__init__`` through
``reset()``, so ``set_config(remember_data=False)`` after construction cannot stop it.
The families therefore use thin subclasses whose *class* config sets
``remember_data=False`` explicitly (the value sktime 1.3 adopts): the loop never calls
``update``, so nothing needs the stored data. No warning filter is installed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from stabfw.errors import ConfigError

__all__ = ["LOG_SIGMA2", "Conditioned", "Family", "ForecastState", "log_sigma2"]

#: θ holds the noise variance as log σ², the natural coordinate of a scale parameter: the
#: analyzers' perturbations stay relative whatever the series' units, and a variance that
#: collapses towards 0 drifts to −∞ instead of stalling at a boundary
LOG_SIGMA2 = "log_sigma2"


def log_sigma2(sigma2: float) -> float:
    """log σ² (−inf for a zero variance)."""
    with np.errstate(divide="ignore"):
        return float(np.log(sigma2))


@dataclass(eq=False)
class ForecastState:
    """A fitted forecaster as the loop sees it.

    Attributes
    ----------
    family : str
        ``ets``, ``arima``, ``theta`` or ``reduction``.
    theta : numpy.ndarray
        The family's numeric parameters (empty when it has none, e.g. a random forest).
    names : tuple of str
        A name per entry of ``theta``.
    aux : dict
        What the family needs besides θ (ETS initial states, the ARIMA specification,
        Theta's initial level and seasonal factors, the fitted regressor).
    residuals : numpy.ndarray or None
        In-sample one-step residuals (families simulated by residual bootstrap).
    forecaster : sktime forecaster or None
        The fitted sktime object (``None`` for a state built by ``with_params``).
    diverged : bool
        The history could not be fitted any more (non-finite values, or values ≤ 0 for a
        multiplicative model): θ is NaN and every later generation stays diverged.
    """

    family: str
    theta: np.ndarray
    names: tuple[str, ...]
    aux: dict[str, Any]
    residuals: np.ndarray | None = None
    forecaster: Any = None
    diverged: bool = False
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # conditioned backend results are recomputed on demand; keep checkpoints small
        state = dict(self.__dict__)
        state["cache"] = {}
        return state


class Conditioned(abc.ABC):
    """A fitted model conditioned on a history: forecasts and sample paths after its end."""

    @abc.abstractmethod
    def forecast(self, h: int) -> np.ndarray:
        """Point forecast for the ``h`` steps after the history, shape ``(h,)``."""

    @abc.abstractmethod
    def simulate(self, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
        """``reps`` sample paths of the ``n`` steps after the history, shape ``(n, reps)``."""


class Family(abc.ABC):
    """A forecaster family: builds its sktime forecaster and reads θ back.

    Parameters
    ----------
    params : dict
        Constructor arguments of the sktime forecaster (``domain.forecaster_params``).
    sp : int
        Seasonal period of the series (used where the forecaster takes ``sp``).
    panel : bool
        Whether training sets are panels of several series (mode ``augment``).
    """

    name: ClassVar[str]
    #: how sample paths are drawn, for the docs and error messages
    simulation: ClassVar[str]
    #: a local family fits one series; only a global one can pool a panel
    local: ClassVar[bool] = True
    #: constructor arguments the loop sets itself (users may not)
    reserved: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: dict[str, Any], sp: int = 1, panel: bool = False,
                 **extra: Any):
        self.params = dict(params)
        self.sp = sp
        self.panel = panel
        self.extra = extra

    # --- construction ---------------------------------------------------------------
    @abc.abstractmethod
    def sktime_class(self) -> type:
        """The (remember_data=False) sktime forecaster class of this family."""

    def defaults(self) -> dict[str, Any]:
        """Constructor arguments the family sets unless the user does."""
        return {}

    def kwargs(self, init: ForecastState | None, rng: np.random.Generator | None) -> dict:
        """Constructor arguments for one fit (warm-started from ``init`` when given)."""
        return {**self.defaults(), **self.params}

    def validate(self) -> None:
        """Check ``forecaster_params`` by building the forecaster once; clear errors."""
        cls = self.sktime_class()
        accepted = sorted(cls.get_param_names())
        for key in self.params:
            if key in self.reserved:
                raise ConfigError(f"domain.forecaster_params.{key}: set by the {self.name} "
                                  "family itself; leave it out")
            if key not in accepted:
                raise ConfigError(f"domain.forecaster_params: {cls.__mro__[1].__name__} has "
                                  f"no parameter {key!r}; accepted: {', '.join(accepted)}")
        try:
            cls(**self.kwargs(None, None))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"domain.forecaster_params: {err}") from None

    def build(self, init: ForecastState | None, rng: np.random.Generator):
        """An unfitted sktime forecaster for one fit."""
        return self.sktime_class()(**self.kwargs(init, rng))

    # --- the loop's operations -------------------------------------------------------
    def fit(self, y: pd.Series | pd.DataFrame, init: ForecastState | None,
            rng: np.random.Generator) -> ForecastState:
        """Fit the sktime forecaster on ``y`` and extract its state."""
        forecaster = self.build(init, rng)
        forecaster.fit(y)
        return self.extract(forecaster, y)

    @abc.abstractmethod
    def extract(self, forecaster: Any, y: pd.Series | pd.DataFrame) -> ForecastState:
        """Read θ (and ``aux``) from a fitted forecaster."""

    @property
    def has_params(self) -> bool:
        """Whether θ is a usable parameter vector (else the loop uses a forecast signature)."""
        return True

    def with_theta(self, state: ForecastState, theta: np.ndarray) -> ForecastState:
        """``state`` with θ replaced (families that can rebuild themselves from θ)."""
        raise NotImplementedError(f"the {self.name} family cannot be rebuilt from θ")

    @abc.abstractmethod
    def condition(self, state: ForecastState, history: pd.Series) -> Conditioned:
        """``state`` conditioned on ``history`` (its filtered level / last window)."""

    def sample_paths(self, state: ForecastState, lengths: list[int], like: pd.Series,
                     rng: np.random.Generator) -> list[np.ndarray]:
        """Unconditional sample paths (whole synthetic series) for mode ``augment``."""
        raise ConfigError(f"mode 'augment' needs a global forecaster; {self.name} is local")

    def summary(self, state: ForecastState) -> dict[str, float]:
        """Fitted parameters worth a metric column each (default: all of θ, σ² as is)."""
        return {("sigma2" if n == LOG_SIGMA2 else n): float(np.exp(v) if n == LOG_SIGMA2 else v)
                for n, v in zip(state.names, state.theta)}

    def min_length(self) -> int:
        """Fewest observations a history needs for one fit."""
        return 10

    @property
    def positive(self) -> bool:
        """Whether the model only accepts histories of positive values."""
        return False


def with_sigma2_scale(residuals: np.ndarray, sigma2: float) -> float:
    """Factor that rescales bootstrapped residuals to variance ``sigma2``."""
    base = float(np.mean(residuals**2)) if residuals.size else 0.0
    return float(np.sqrt(max(sigma2, 0.0) / base)) if base > 0 else 0.0
