"""Real series for the forecasting loop and the history containers it passes around.

A *history* is one ``pd.Series`` named ``"y"`` with a continuous index (a ``PeriodIndex``
with a frequency, or a ``RangeIndex``): the forecaster sees it in order, so two histories
are joined by :func:`splice` (the later one continues or overwrites the earlier one from
its first time point on) and never by a row-wise concatenation that would break the time
axis. A *panel* (mode ``augment``) is a ``pd.DataFrame`` with one column ``"y"`` and a
``(instance, time)`` ``MultiIndex``: the real history is instance 0, synthetic series
follow; :func:`stack` builds one from histories and panels.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabfw.errors import ConfigError

__all__ = [
    "DATASETS",
    "future_index",
    "load_series",
    "series_list",
    "splice",
    "stack",
]

#: Series that ship inside sktime (no download): name -> (loader, default column).
DATASETS: dict[str, tuple[str, str | None]] = {
    "airline": ("load_airline", None),
    "lynx": ("load_lynx", None),
    "shampoo_sales": ("load_shampoo_sales", None),
    "pbs": ("load_PBS_dataset", None),
    "uschange": ("load_uschange", "Consumption"),
    "longley": ("load_longley", "TOTEMP"),
    "macroeconomic": ("load_macroeconomic", "realgdp"),
}

NAME = "y"
INSTANCE = "instance"


def load_series(
    dataset: str | None,
    csv: str | None = None,
    column: str | None = None,
    time_column: str | None = None,
    freq: str | None = None,
) -> pd.Series:
    """The whole real series (training history and held-out window), named ``"y"``.

    Parameters
    ----------
    dataset : str
        One of :data:`DATASETS` (loaded from the files installed with sktime).
    csv : str, optional
        A CSV file to read instead; ``column`` names the value column (default: the
        only numeric one), ``time_column`` an optional date column, parsed into a
        ``PeriodIndex`` of frequency ``freq`` (inferred when not given).
    """
    if csv is not None:
        y = _read_csv(Path(csv), column, time_column, freq)
    else:
        if dataset not in DATASETS:
            raise ConfigError(f"domain.dataset: unknown series {dataset!r}; "
                              f"choose one of {', '.join(DATASETS)} or give domain.csv")
        loader, default_col = DATASETS[dataset]
        out = getattr(importlib.import_module("sktime.datasets"), loader)()
        if isinstance(out, tuple):  # (y, X) loaders: pick y or a column of X
            y, X = out
            col = column or default_col
            if col is not None and col != y.name:
                if X is None or col not in X.columns:
                    have = [y.name, *([] if X is None else list(X.columns))]
                    raise ConfigError(f"domain.column: {dataset} has no column {col!r}; "
                                      f"have {have}")
                y = X[col]
        elif isinstance(out, pd.DataFrame):
            col = column or default_col
            if col not in out.columns:
                raise ConfigError(f"domain.column: {dataset} has no column {col!r}; "
                                  f"have {list(out.columns)}")
            y = out[col]
        else:
            y = out
            if column is not None:
                raise ConfigError(f"domain.column: {dataset} is a single series; "
                                  "leave column out")
    return _normalise(y, f"dataset {csv or dataset!r}")


def _read_csv(path: Path, column: str | None, time_column: str | None,
              freq: str | None) -> pd.Series:
    if not path.is_file():
        raise FileNotFoundError(
            f"domain.csv: no file at {path}; give a CSV with one value column "
            "(and optionally a date column named by domain.time_column)")
    df = pd.read_csv(path)
    if time_column is not None:
        if time_column not in df.columns:
            raise ConfigError(f"domain.time_column: {path} has no column {time_column!r}; "
                              f"have {list(df.columns)}")
        times = pd.DatetimeIndex(pd.to_datetime(df.pop(time_column)))
        df.index = _to_period(times, freq, f"{path}:{time_column}")
    if column is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        if len(numeric) != 1:
            raise ConfigError(f"domain.column: {path} has numeric columns {numeric}; "
                              "name the one to forecast")
        column = numeric[0]
    if column not in df.columns:
        raise ConfigError(f"domain.column: {path} has no column {column!r}; "
                          f"have {list(df.columns)}")
    return df[column]


def _to_period(times: pd.DatetimeIndex, freq: str | None, what: str) -> pd.PeriodIndex:
    """Regular dates as periods; ``freq`` may be a period ('M') or date ('MS') alias."""
    if freq is not None:
        try:
            return times.to_period(freq)
        except ValueError:
            pass
    f = freq or times.freq or pd.infer_freq(times)
    if f is None:
        raise ConfigError(f"domain.freq: cannot infer a regular frequency from {what}; "
                          "set domain.freq (e.g. 'M', 'D')")
    try:  # a date offset such as 'MS' maps to its period ('M') through the index's freq
        return pd.DatetimeIndex(times, freq=f).to_period()
    except ValueError as err:
        raise ConfigError(f"domain.freq: {what} is not regular at frequency {f!r} ({err})"
                          ) from None


def _normalise(y: pd.Series, what: str) -> pd.Series:
    y = pd.Series(np.asarray(y, dtype=float), index=y.index, name=NAME)
    idx = y.index
    if isinstance(idx, pd.DatetimeIndex):
        idx = _to_period(idx, None, what)
    elif isinstance(idx, pd.PeriodIndex):
        if len(idx) > 1 and not (idx[1:] == idx[:-1] + 1).all():
            raise ConfigError(f"{what}: the time index has gaps")
    else:
        idx = pd.RangeIndex(len(y))
    y.index = idx
    if not np.all(np.isfinite(y.to_numpy())):
        raise ConfigError(f"{what}: the series has missing or non-finite values")
    return y


def future_index(index: pd.Index, start_pos: int, n: int) -> pd.Index:
    """The ``n`` time points from position ``start_pos`` of ``index`` on (beyond its end too)."""
    if isinstance(index, pd.PeriodIndex):
        return pd.period_range(index[0] + start_pos, periods=n, freq=index.freq, name=index.name)
    return pd.RangeIndex(index[0] + start_pos, index[0] + start_pos + n, name=index.name)


def _position(index: pd.Index, t: Any) -> int:
    """Position of time point ``t`` relative to ``index[0]`` (negative before it)."""
    if isinstance(index, pd.PeriodIndex):
        return int((t - index[0]).n)
    return int(t - index[0])


def splice(parts: Sequence[pd.Series]) -> pd.Series:
    """Join histories in time: each part continues the result or overwrites its tail.

    A part that starts at time ``s`` keeps the result before ``s`` and puts its own values
    from ``s`` on (``s`` one step after the result's end: plain continuation). A gap or a
    part starting before the first one is an error.
    """
    parts = [p for p in parts if p is not None and len(p) > 0]
    if not parts:
        raise ValueError("nothing to splice: every history is empty")
    out = parts[0]
    for p in parts[1:]:
        start = _position(out.index, p.index[0])
        if start < 0 or start > len(out):
            raise ValueError(
                f"cannot splice a history starting at {p.index[0]} onto one spanning "
                f"{out.index[0]}..{out.index[-1]}: it must start inside it or right after it")
        out = pd.concat([out.iloc[:start], p])
    out.name = NAME
    return out


def series_list(data: pd.Series | pd.DataFrame) -> list[pd.Series]:
    """The histories held by a history (one) or a panel (one per instance)."""
    if isinstance(data, pd.Series):
        return [data]
    return [g.droplevel(0)[NAME] for _, g in data.groupby(level=0, sort=False)]


def stack(parts: Sequence[pd.Series | pd.DataFrame]) -> pd.DataFrame:
    """A panel holding every history of ``parts`` as instances ``0, 1, ...`` in order."""
    series = [s for p in parts if p is not None and len(p) > 0 for s in series_list(p)]
    if not series:
        raise ValueError("nothing to stack: every part is empty")
    panel = pd.concat({i: s.rename(NAME) for i, s in enumerate(series)},
                      names=[INSTANCE, series[0].index.name or "time"])
    return panel.to_frame(NAME)
