"""Forecasting domain: sktime forecasters refitted on histories holding their own output.

Forecasting systems feed on their own outputs: missing actuals are filled with forecasts,
histories are extended by simulated futures, and synthetic series drawn from a fitted
model augment the training data. :class:`ForecastingLoop` runs that loop for sktime's
ETS, ARIMA, Theta and reduction forecasters on real series (see ``docs/forecasting.md``).

sktime is imported only when a forecaster family is first used.
"""

from stabfw.domains.forecasting.family import ForecastState
from stabfw.domains.forecasting.loop import FAMILIES, ForecastingLoop

__all__ = ["FAMILIES", "ForecastState", "ForecastingLoop"]
