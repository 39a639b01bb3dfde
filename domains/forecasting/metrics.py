"""Forecast accuracy on the held-out window: MASE, sMAPE and interval coverage.

References
----------
Hyndman & Koehler, "Another look at measures of forecast accuracy", IJF 22(4), 2006
(MASE, with the in-sample seasonal naive forecast as the scale). Makridakis, "Accuracy
measures: theoretical and practical concerns", IJF 9(4), 1993 (sMAPE, the M3/M4
definition in percent). Gneiting & Raftery, "Strictly proper scoring rules, prediction,
and estimation", JASA 102(477), 2007 (interval coverage and width).
"""

from __future__ import annotations

import numpy as np

__all__ = ["interval_coverage", "mase", "mase_scale", "smape"]


def mase_scale(train: np.ndarray, sp: int = 1) -> float:
    """Mean absolute error of the seasonal naive forecast on the training series."""
    train = np.asarray(train, dtype=float)
    if train.size <= sp:
        raise ValueError(f"MASE needs more than sp={sp} training values, got {train.size}")
    return float(np.mean(np.abs(train[sp:] - train[:-sp])))


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: mean |actual − forecast| / ``scale``."""
    err = np.mean(np.abs(np.asarray(actual, float) - np.asarray(forecast, float)))
    return float(err / scale) if scale > 0 else float("inf")


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent: mean of 200 |a − f| / (|a| + |f|) (0 where both are 0)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    den = np.abs(a) + np.abs(f)
    ratio = np.divide(2.0 * np.abs(a - f), den, out=np.zeros_like(den), where=den > 0)
    return float(100.0 * np.mean(ratio))


def interval_coverage(actual: np.ndarray, paths: np.ndarray, coverage: float
                      ) -> tuple[float, float]:
    """Share of ``actual`` inside the central ``coverage`` interval of simulated paths.

    Parameters
    ----------
    actual : array of shape (h,)
    paths : array of shape (h, reps)
        Sample paths of the same window.
    coverage : float in (0, 1)

    Returns
    -------
    (coverage, mean width) : the empirical coverage and the mean interval width.
    """
    lo, hi = np.quantile(paths, [(1 - coverage) / 2, (1 + coverage) / 2], axis=1)
    a = np.asarray(actual, float)
    return float(np.mean((a >= lo) & (a <= hi))), float(np.mean(hi - lo))
