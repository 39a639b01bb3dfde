"""Labelled data for the anomaly loop: offline datasets, their splits, and the container.

Datasets (all offline)
----------------------
``breast_cancer``
    scikit-learn's Wisconsin diagnostic breast-cancer set (569 × 30): benign (357) are
    normal, malignant (212) are anomalies. The usual outlier-benchmark protocol (ODDS
    "WBC") keeps only a small sampled fraction of malignant cases; here that fraction is
    the stream's ``contamination`` (each stream point is malignant with that probability).
``digits``
    scikit-learn's 8 × 8 digits (1797 × 64): the class ``anomaly_class`` is the anomaly,
    the nine others are normal.
``ecg``
    The MIT-BIH ECG excerpt shipped in sktime's package data,
    ``sktime/datasets/data/mitdb/mitdb.csv`` (7500 samples, columns ``data`` and ``label``;
    one labelled arrhythmic beat at samples 6936–7287). Cut into sliding windows of
    ``window`` samples every ``window_stride``, each described by ``n_window_features``
    numbers: its amplitude quantiles (``window_features="quantiles"``: the sorted window
    averaged over equal blocks — invariant to where the heartbeat falls in the window) or
    its samples averaged over equal blocks (``"samples"``). A window is an anomaly when at
    least half of it is labelled, normal when none of it is; windows in between are dropped.
``data``
    A user's labelled array: ``(X, y)``, a ``.npz`` with arrays ``X`` and ``y``, or a
    ``.csv`` whose ``label`` column is the label (1 = anomaly, 0 = normal).

Splits
------
One split per ``split_seed``, fixed across replicates (the held-out test split must be the
same for every run so that metrics are comparable):

* **test** — ``test_fraction`` of the normal and of the anomalous samples, never seen by
  any fit, stream or probe;
* **clean** — half of the remaining normal samples: the pool the trusted clean set
  (``real_data``) is drawn from;
* **stream normal / stream anomaly** — the other half of the normal samples and the
  remaining anomalies: what the contaminated stream is drawn from;
* **probe** — a fixed set from the clean and stream pools where a detector's functional
  signature is read.

For ``ecg`` the normal windows are split by contiguous time blocks (10 blocks) and every
training window that shares a sample with a test window is purged, so no test sample
reaches training through an overlapping window. The series holds a single anomalous beat,
so its windows are split at random between test and stream: test and stream anomalies are
different windows of that same beat (a limitation of the shipped data, not hidden).

Features are standardised with the mean and standard deviation of the clean pool (and,
with ``n_components``, projected on the clean pool's leading principal axes); this map is
fixed by the split, not refitted by the loop.

References
----------
Street, Wolberg & Mangasarian, "Nuclear feature extraction for breast tumor diagnosis",
1993 (the breast-cancer data). Rayana, ODDS Library, Stony Brook University, 2016 (the WBC
outlier benchmark). Moody & Mark, "The impact of the MIT-BIH arrhythmia database",
IEEE Eng. Med. Biol. 20(3), 2001.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LabelledBatch", "Split", "StreamStats", "build_split", "load_dataset",
           "sktime_data_file"]

#: label of a point sampled from a fitted density (no ground truth)
SYNTHETIC = -1
#: ``source`` codes
TRUSTED, ADMITTED, DENSITY = 0, 1, 2


@dataclass(frozen=True)
class StreamStats:
    """What one generation's self-filtering saw and let through.

    Attributes
    ----------
    inspected : int
        Stream points the detector scored (the shortest stream prefix holding the points
        it admitted).
    inspected_anomalies : int
        True anomalies among them.
    admitted : int
        Stream points that entered the training set (``forced`` included).
    admitted_anomalies : int
        True anomalies among the admitted points.
    forced : int
        Points taken although scored above the threshold, because the detector admitted
        too few within ``max_inspect_factor × n`` inspected points (the least anomalous
        of the inspected points are taken).
    forced_anomalies : int
        True anomalies among the forced points.
    density : int
        Points sampled from the fitted density.
    cumulative_anomalies : int
        Anomalies admitted in this and all earlier generations of the run.
    """

    inspected: int = 0
    inspected_anomalies: int = 0
    admitted: int = 0
    admitted_anomalies: int = 0
    forced: int = 0
    forced_anomalies: int = 0
    density: int = 0
    cumulative_anomalies: int = 0


@dataclass(frozen=True, eq=False)
class LabelledBatch:
    """Points with their labels and where they came from.

    The detector is fitted on ``X`` alone; ``y`` and ``source`` travel with the points only
    so that the loop can count what it let through.

    Attributes
    ----------
    X : ndarray of shape (n, d)
        Features (already standardised / projected).
    y : ndarray of shape (n,), int8
        1 anomaly, 0 normal, −1 sampled from a density (no ground truth).
    source : ndarray of shape (n,), int8
        0 trusted clean, 1 admitted from the stream, 2 sampled from the fitted density.
    stats : StreamStats or None
        The self-filtering record of the generation that produced the newest points.
    """

    X: np.ndarray
    y: np.ndarray
    source: np.ndarray
    stats: StreamStats | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelledBatch):
            return NotImplemented
        return (np.array_equal(self.X, other.X) and np.array_equal(self.y, other.y)
                and np.array_equal(self.source, other.source) and self.stats == other.stats)

    __hash__ = None  # mutable arrays inside

    @staticmethod
    def concat(parts: list[LabelledBatch]) -> LabelledBatch:
        """Concatenate along the sample axis; ``stats`` is the last part's that has one."""
        parts = [p for p in parts if p is not None and len(p) > 0]
        if not parts:
            raise ValueError("nothing to concatenate: every part is empty")
        stats = next((p.stats for p in reversed(parts) if p.stats is not None), None)
        if len(parts) == 1:
            p = parts[0]
            return LabelledBatch(p.X, p.y, p.source, stats)
        return LabelledBatch(np.concatenate([p.X for p in parts]),
                             np.concatenate([p.y for p in parts]),
                             np.concatenate([p.source for p in parts]), stats)

    def take(self, index: np.ndarray) -> LabelledBatch:
        """The points at integer positions ``index`` (``stats`` kept)."""
        index = np.asarray(index, dtype=np.int64)
        return LabelledBatch(self.X[index], self.y[index], self.source[index], self.stats)


@dataclass(frozen=True)
class Split:
    """Index arrays into a dataset's rows (see the module notes)."""

    test: np.ndarray
    clean: np.ndarray
    stream_normal: np.ndarray
    stream_anomaly: np.ndarray
    probe: np.ndarray
    #: ECG only: the sample span [start, stop) of each row, for the leakage check
    spans: np.ndarray | None = None

    def training_rows(self) -> np.ndarray:
        """Every row a fit can ever see (trusted pool and stream pools)."""
        return np.concatenate([self.clean, self.stream_normal, self.stream_anomaly])


def sktime_data_file(*parts: str) -> Path:
    """Path of a file inside sktime's package data (without importing sktime)."""
    spec = importlib.util.find_spec("sktime")
    rel = Path("datasets", "data", *parts)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the ECG series ships inside sktime's package data (sktime/{rel.as_posix()}), "
            "but sktime is not installed: pip install 'stabfw[anomaly]'")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed sktime; "
                                "reinstall sktime>=1.2 (pip install 'stabfw[anomaly]')")
    return path


def _windows(series: np.ndarray, labels: np.ndarray, window: int, stride: int,
             kind: str, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if window > series.size:
        raise ValueError(f"domain.window={window} is longer than the series ({series.size})")
    if window % n_features:
        raise ValueError(f"domain.window={window} must be a multiple of "
                         f"domain.n_window_features={n_features}")
    starts = np.arange(0, series.size - window + 1, stride)
    idx = starts[:, None] + np.arange(window)
    W = series[idx]
    if kind == "quantiles":
        W = np.sort(W, axis=1)
    elif kind != "samples":
        raise ValueError(f"domain.window_features: {kind!r} is not one of quantiles, samples")
    X = W.reshape(starts.size, n_features, window // n_features).mean(axis=2)
    frac = labels[idx].mean(axis=1)
    keep = (frac >= 0.5) | (frac == 0)
    y = (frac >= 0.5).astype(np.int8)
    spans = np.stack([starts, starts + window], axis=1)
    return X[keep], y[keep], spans[keep]


def load_dataset(name: str, *, data: Any = None, anomaly_class: int = 0, window: int = 384,
                 window_stride: int = 4, window_features: str = "quantiles",
                 n_window_features: int = 16):
    """Features, labels (1 = anomaly) and, for series, each row's sample span.

    Returns
    -------
    X : ndarray (n, d) float, y : ndarray (n,) int8, spans : ndarray (n, 2) or None
    """
    if data is not None:
        X, y = _load_user_data(data)
        return X, y, None
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        return bunch.data.astype(float), (bunch.target == 0).astype(np.int8), None
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data.astype(float), (bunch.target == anomaly_class).astype(np.int8), None
    if name == "ecg":
        import pandas as pd

        frame = pd.read_csv(sktime_data_file("mitdb", "mitdb.csv"))
        X, y, spans = _windows(frame["data"].to_numpy(float), frame["label"].to_numpy(float),
                               window, window_stride, window_features, n_window_features)
        return X, y, spans
    raise ValueError(f"domain.dataset: unknown dataset {name!r}; "
                     "choose breast_cancer, digits or ecg (or give domain.data)")


def _load_user_data(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"domain.data: no file at {path}; give a .npz with arrays "
                                    "X and y, or a .csv with a 'label' column")
        if path.suffix == ".npz":
            with np.load(path) as z:
                if "X" not in z or "y" not in z:
                    raise ValueError(f"domain.data: {path} must hold arrays 'X' and 'y'")
                X, y = z["X"], z["y"]
        else:
            import pandas as pd

            frame = pd.read_csv(path)
            if "label" not in frame:
                raise ValueError(f"domain.data: {path} has no 'label' column")
            y = frame.pop("label").to_numpy()
            X = frame.to_numpy(float)
    else:
        try:
            X, y = data
        except (TypeError, ValueError):
            raise ValueError("domain.data must be a path or a pair (X, y)") from None
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or y.shape != (X.shape[0],) or not np.all(np.isfinite(X)):
        raise ValueError(f"domain.data: need finite X of shape (n, d) and y of shape (n,); "
                         f"got {X.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("domain.data: labels must be 0 (normal) or 1 (anomaly)")
    return X, y.astype(np.int8)


def build_split(y: np.ndarray, spans: np.ndarray | None, test_fraction: float, n_probe: int,
                seed: int) -> Split:
    """Split row indices into test, clean, stream and probe sets (see the module notes)."""
    rng = np.random.default_rng([seed, 0x5EED])
    normal = np.flatnonzero(y == 0)
    anomaly = np.flatnonzero(y == 1)
    if normal.size < 4:
        raise ValueError(f"the dataset has {normal.size} normal points; need at least 4")

    def cut(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.permutation(idx)
        k = round(test_fraction * idx.size)
        if idx.size >= 2:
            k = min(max(k, 1), idx.size - 1)
        return np.sort(idx[:k]), np.sort(idx[k:])

    test_anom, stream_anom = cut(anomaly)
    if spans is None:
        test_norm, rest = cut(normal)
    else:
        # contiguous time blocks, then purge every training window overlapping a test one
        n_blocks = 10
        edges = np.linspace(spans[:, 0].min(), spans[:, 0].max() + 1, n_blocks + 1)
        block = np.searchsorted(edges, spans[normal, 0], side="right") - 1
        k = min(max(round(test_fraction * n_blocks), 1), n_blocks - 1)
        test_blocks = rng.choice(n_blocks, size=k, replace=False)
        in_test = np.isin(block, test_blocks)
        test_norm, rest = normal[in_test], normal[~in_test]
        covered = np.zeros(int(spans[:, 1].max()) + 1, dtype=np.int64)
        for a, b in spans[np.concatenate([test_norm, test_anom])]:
            covered[a] += 1
            covered[b] -= 1
        busy = np.cumsum(covered) > 0
        prefix = np.concatenate([[0], np.cumsum(busy)])
        overlaps = prefix[spans[rest, 1]] - prefix[spans[rest, 0]] > 0
        rest = rest[~overlaps]
    rest = rng.permutation(rest)
    half = rest.size // 2
    clean, stream_norm = np.sort(rest[:half]), np.sort(rest[half:])
    if clean.size == 0 or stream_norm.size == 0:
        raise ValueError("too few normal points left for the clean and stream pools; "
                         "lower domain.test_fraction")
    pool_norm = np.concatenate([clean, stream_norm])
    k_anom = min(n_probe // 2, stream_anom.size)
    probe = np.concatenate([
        rng.choice(pool_norm, size=min(n_probe - k_anom, pool_norm.size), replace=False),
        rng.choice(stream_anom, size=k_anom, replace=False) if k_anom else np.empty(0, int),
    ]).astype(np.int64)
    return Split(test=np.sort(np.concatenate([test_norm, test_anom])), clean=clean,
                 stream_normal=stream_norm, stream_anomaly=stream_anom, probe=probe,
                 spans=spans)
