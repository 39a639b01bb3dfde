"""Trajectories recorded outside stabfw: load a CSV or NPZ panel and analyse it.

CSV: one row per seed and generation, columns ``seed``, ``generation``, then θ entries
and/or metrics (numbers). NPZ: ``theta`` of shape (seeds, generations + 1, d) or
(seeds, generations + 1), and optionally one array per metric of shape
(seeds, generations + 1). Generation 0 is taken as θ* (the model fitted on real data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stabfw.analysis.fixed_point import FixedPointAnalyzer
from stabfw.analysis.headline import run_headline
from stabfw.errors import ConfigError

__all__ = ["RecordedPanel", "analyze_recorded", "load_recorded"]


@dataclass
class RecordedPanel:
    """A recorded panel: θ (seeds, generations + 1, d) and metrics by name."""

    theta: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    theta_names: list[str] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    source: str = ""


def _split(cols: str | list[str] | None) -> list[str] | None:
    if cols is None:
        return None
    if isinstance(cols, str):
        cols = [c.strip() for c in cols.split(",")]
    return [c for c in cols if c]


def load_recorded(path: str | Path, theta: str | list[str] | None = None,
                  metrics: str | list[str] | None = None) -> RecordedPanel:
    """Read a CSV or NPZ panel.

    Parameters
    ----------
    path : path of a ``.csv`` or ``.npz`` file
    theta : columns (CSV) of θ; default every numeric column not named in ``metrics``
    metrics : columns (CSV) or arrays (NPZ) to read as metrics; default none (CSV) or every
        array but ``theta`` (NPZ)

    Raises
    ------
    ConfigError
        A missing file or column, a non-numeric column, seeds with different generations,
        a gap in the generations, or an array of the wrong shape — naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    theta, metrics = _split(theta), _split(metrics)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, theta, metrics)
    if suffix != ".csv":
        raise ConfigError(f"{path}: a recorded trajectory must be .csv or .npz, not "
                          f"{suffix or 'a file without suffix'}")
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable CSV ({err})") from None
    for col in ("seed", "generation"):
        if col not in table.columns:
            raise ConfigError(f"{path}: no column {col!r}; the columns must start with seed, "
                              f"generation (have: {', '.join(map(str, table.columns))})")
    metrics = metrics or []
    if theta is None:
        theta = [c for c in table.columns if c not in ("seed", "generation") and c not in metrics]
    for c in [*theta, *metrics]:
        if c not in table.columns:
            raise ConfigError(f"{path}: no column {c!r} (have: {', '.join(map(str, table.columns))})")
        if not pd.api.types.is_numeric_dtype(table[c]):
            raise ConfigError(f"{path}: column {c!r} is not numeric")
    if not theta:
        raise ConfigError(f"{path}: no θ columns (give --theta COLS)")
    gen = pd.to_numeric(table["generation"], errors="coerce")
    if gen.isna().any() or (gen % 1 != 0).any() or (gen < 0).any():
        raise ConfigError(f"{path}: column 'generation' must hold integers ≥ 0")
    table = table.assign(generation=gen.astype(int))
    if table.duplicated(["seed", "generation"]).any():
        raise ConfigError(f"{path}: a (seed, generation) pair appears twice")
    counts = table.groupby("seed")["generation"].agg(["min", "max", "count"])
    T = int(counts["max"].max())
    bad = counts[(counts["min"] != 0) | (counts["max"] != T) | (counts["count"] != T + 1)]
    if len(bad):
        raise ConfigError(f"{path}: column 'generation': every seed needs generations 0..{T} "
                          f"with no gaps; seed {bad.index[0]} has {int(bad['count'].iloc[0])} "
                          f"rows from {int(bad['min'].iloc[0])} to {int(bad['max'].iloc[0])}")
    table = table.sort_values(["seed", "generation"])
    seeds = list(dict.fromkeys(table["seed"].tolist()))
    S = len(seeds)
    X = table[theta].to_numpy(float).reshape(S, T + 1, len(theta))
    mets = {m: table[m].to_numpy(float).reshape(S, T + 1) for m in metrics}
    return RecordedPanel(X, mets, list(theta), seeds, str(path))


def _load_npz(path: Path, theta: list[str] | None, metrics: list[str] | None) -> RecordedPanel:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable .npz ({err})") from None
    key = (theta or ["theta"])[0]
    if key not in data.files:
        raise ConfigError(f"{path}: no array {key!r} (have: {', '.join(data.files)})")
    X = np.asarray(data[key], dtype=float)
    if X.ndim == 2:
        X = X[..., None]
    if X.ndim != 3 or X.shape[1] < 2:
        raise ConfigError(f"{path}: array {key!r} must have shape (seeds, generations + 1, d) "
                          f"with ≥ 2 generations; got {X.shape}")
    names = [n for n in data.files if n != key] if metrics is None else metrics
    mets = {}
    for m in names:
        if m not in data.files:
            raise ConfigError(f"{path}: no array {m!r} (have: {', '.join(data.files)})")
        v = np.asarray(data[m], dtype=float)
        if v.shape != X.shape[:2]:
            raise ConfigError(f"{path}: array {m!r} must have shape {X.shape[:2]} "
                              f"(seeds, generations + 1); got {v.shape}")
        mets[m] = v
    return RecordedPanel(X, mets, [f"{key}[{i}]" for i in range(X.shape[-1])],
                         list(range(X.shape[0])), str(path))


def analyze_recorded(panel: RecordedPanel, diversity: str | list[str] | None = None,
                     confidence: float = 0.9, burn_in: int | None = None,
                     policy: str | None = None) -> dict[str, Any]:
    """The fixed-point report of a recorded panel: ``fixed_point`` (θ),
    ``fixed_point_metrics`` (each metric) and ``headline``.

    ``diversity`` names the metrics that measure diversity (collapse = one heading to 0).
    """
    div = _split(diversity) or []
    missing = [d for d in div if d not in panel.metrics]
    if missing:
        raise ConfigError(f"--diversity: no metric {missing[0]!r} (have: "
                          f"{', '.join(panel.metrics) or 'none; add it with --metrics'})")
    fpa = FixedPointAnalyzer(confidence=confidence, burn_in=burn_in)
    fp = fpa.analyze(panel.theta, diversity={d: panel.metrics[d] for d in div}, policy=policy)
    results: dict[str, Any] = {"source": panel.source, "theta_columns": panel.theta_names,
                               "fixed_point": fp.to_dict()}
    if panel.metrics:
        results["fixed_point_metrics"] = {
            m: fpa.analyze_series(v, name=m, kind="diversity" if m in div else None,
                                  policy=policy).to_dict() for m, v in panel.metrics.items()}
    results["headline"] = run_headline(results, None)
    return results
