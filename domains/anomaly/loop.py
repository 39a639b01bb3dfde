"""The anomaly-detection loop: a detector retrained on the data it let through.

A deployed detector is retrained on recent data it judged normal, sometimes topped up
with synthetic normal data from its own density model. Anomalies it misses enter its next
training set; if that makes it more tolerant of them, more get in ("contamination creep").

Mapping onto :class:`stabfw.SelfConsumingLoop`
----------------------------------------------
* ``real_data(rng)`` — the **trusted clean set**: ``n_clean`` normal points drawn from the
  clean pool. With ``policy: fixed_real`` the same set is reused every generation; with
  ``fresh_real`` a new trusted set is drawn each generation.
* ``generate(state, n, rng)`` — ``n`` self-selected points: ``⌊(1 − density_fraction)·n⌉``
  points of a fresh contaminated stream that the current detector scores at or below its
  threshold, plus the rest sampled from its fitted density (``envelope`` and ``gmm``).
  The stream batch of a generation is the **shortest stream prefix that holds the points
  admitted**: the detector inspects stream points one after another (each an anomaly
  with probability ``contamination``) until it has admitted enough, so the batch size is
  ``B_t ≈ n_admitted / P_t(admit)`` — it grows as the detector tightens. At most
  ``max_inspect_factor × n`` points are inspected; if that is not enough, the least
  anomalous of the inspected points are taken (``forced``), which is what a retraining job
  with a fixed data quota would do.
* λ = (self-selected + synthetic points) / trusted clean points, exactly the core's
  definition; the core's mixing policies apply unchanged (``mix`` is not overridden):
  ``fixed_real`` = trusted set + this generation's admitted points, ``accumulate`` =
  trusted set + every point admitted so far, ``fully_synthetic`` = admitted points only.
* ``fit`` sees only the feature matrix; labels travel in the data container
  (:class:`LabelledBatch`) for bookkeeping and are never passed to the detector.
* θ — ``params(state)`` is the detector's continuous parameters followed by its
  threshold for ``envelope`` and ``gmm`` (``with_params`` works, so finite-difference
  Jacobians do too; covariances enter through log-Cholesky factors, weights and the
  envelope's threshold through logarithms, so every perturbed θ is a valid detector); for
  ``iforest`` and ``lof`` it is a functional signature, the scores on the fixed probe set,
  followed by the threshold.

θ* (the fit on trusted data alone) is *not* a fixed point of this loop: the admitted
points are a selected, contaminated sample, not draws from the model. Distances to θ*
therefore settle at a selection bias rather than at zero, even for a stable loop.
"""

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from stabfw.core.artifacts import recording_target
from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.loop import SelfConsumingLoop
from stabfw.domains.anomaly.data import (
    ADMITTED,
    DENSITY,
    SYNTHETIC,
    TRUSTED,
    LabelledBatch,
    StreamStats,
    build_split,
    load_dataset,
)
from stabfw.domains.anomaly.detectors import Detector, make_detector

__all__ = ["AnomalyLoop", "DetectorState"]

Fraction = Annotated[float, Field(gt=0, lt=1)]


@dataclass(frozen=True)
class DetectorState:
    """A fitted detector, its decision threshold and what its training set held.

    Attributes
    ----------
    model : estimator
        The fitted scikit-learn model.
    threshold : float
        Points scoring above it are rejected as anomalies.
    info : dict
        Bookkeeping of the training set (from the labels, never seen by the model).
    """

    model: Any
    threshold: float
    info: dict[str, float] = field(default_factory=dict)
    #: scores of every stream point under this model, computed once on first use (see
    #: ``AnomalyLoop.stream_scores``): the next generation's selection and this
    #: generation's admit-rate metrics read the same array
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


class AnomalyLoop(SelfConsumingLoop):
    """An anomaly detector retrained on the points it admitted from a contaminated stream.

    Parameters
    ----------
    dataset : {"breast_cancer", "digits", "ecg"}
        Offline labelled data (see :mod:`domains.anomaly.data`); ignored when ``data``
        is given.
    detector : {"envelope", "gmm", "iforest", "lof"}
        See :mod:`domains.anomaly.detectors`.
    contamination : float in [0, 1)
        Probability that a stream point is a true anomaly.
    reject_fraction : float in (0, 0.5]
        The detector's nominal rejection rate: its threshold is the ``1 − reject_fraction``
        quantile of its scores on its own training set.
    n_clean : int
        Size of the trusted clean set (the "real data" n).
    density_fraction : float in [0, 1]
        Share of the generated points sampled from the fitted density instead of
        admitted from the stream (``envelope`` and ``gmm`` only).
    test_fraction : float in (0, 1)
        Share of each class held out as the test split.
    recall_fpr : float in (0, 1)
        The false-positive rate at which ``recall_at_fpr`` is read.
    max_inspect_factor : float ≥ 1
        At most this many stream points per generated point are inspected.
    n_probe : int
        Size of the probe set of the functional signature (``iforest``, ``lof``).
    split_seed : int
        Seed of the test / clean / stream / probe split (fixed across replicates).
    n_components : int, optional
        Project the standardised features on this many principal axes of the clean pool.
    n_estimators : int
        Trees of the isolation forest.
    mixture_components : int
        Components of the Gaussian mixture.
    covariance_type : {"full", "diag"}
        Covariance of the mixture components.
    support_fraction : float, optional
        Share of points in the minimum-covariance-determinant support (``envelope``;
        default scikit-learn's ``(n + d + 1) / 2n``).
    n_neighbors : int
        Neighbours of the local outlier factor.
    anomaly_class : int
        The digit that plays the anomaly (``digits``).
    window, window_stride : int
        Length and step of the ECG windows (``ecg``).
    window_features : {"quantiles", "samples"}
        Describe an ECG window by its amplitude quantiles or by its (block-averaged)
        samples.
    n_window_features : int
        Numbers per ECG window (``window`` must be a multiple of it).
    data : str or (X, y), optional
        A user's labelled data instead of ``dataset`` (``.npz`` with ``X``, ``y``; ``.csv``
        with a ``label`` column; or the arrays).

    Notes
    -----
    Metrics per generation (all finite from generation 0 on): ``roc_auc``,
    ``average_precision`` and ``recall_at_fpr`` on the held-out test split; ``threshold``
    and ``test_fpr`` (share of test normals it rejects); ``normal_admit_rate`` and
    ``anomaly_admit_rate``: the shares of the stream's normal and anomalous pools that the
    current detector admits (exact, over the whole pools); from the generation whose
    self-selected points trained the current detector: ``admitted_anomaly_frac`` (true
    anomalies among the admitted stream points), ``anomalies_admitted_total`` (cumulative
    over the run), ``train_anomaly_frac`` (true anomalies in the training set) and
    ``stream_batch`` (stream points inspected, ``B_t``); these are 0 at generation 0.
    """

    test_params: ClassVar[dict[str, Any]] = {"n_clean": 30, "n_components": 4, "n_estimators": 10,
                                             "n_probe": 16}

    def __init__(
        self,
        dataset: Literal["breast_cancer", "digits", "ecg"] = "breast_cancer",
        detector: Literal["envelope", "gmm", "iforest", "lof"] = "envelope",
        contamination: Annotated[float, Field(ge=0, lt=1)] = 0.1,
        reject_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.05,
        n_clean: Annotated[int, Field(ge=5)] = 100,
        density_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0,
        test_fraction: Fraction = 0.3,
        recall_fpr: Fraction = 0.05,
        max_inspect_factor: Annotated[float, Field(ge=1)] = 20.0,
        n_probe: Annotated[int, Field(ge=2)] = 64,
        split_seed: Annotated[int, Field(ge=0)] = 0,
        n_components: Annotated[int, Field(ge=1)] | None = None,
        n_estimators: Annotated[int, Field(ge=1)] = 100,
        mixture_components: Annotated[int, Field(ge=1)] = 3,
        covariance_type: Literal["full", "diag"] = "full",
        support_fraction: Annotated[float, Field(gt=0, le=1)] | None = None,
        n_neighbors: Annotated[int, Field(ge=1)] = 20,
        anomaly_class: Annotated[int, Field(ge=0, le=9)] = 0,
        window: Annotated[int, Field(ge=2)] = 384,
        window_stride: Annotated[int, Field(ge=1)] = 4,
        window_features: Literal["quantiles", "samples"] = "quantiles",
        n_window_features: Annotated[int, Field(ge=1)] = 16,
        data: str | Any | None = None,
    ):
        self.dataset = dataset
        self.detector = detector
        self.contamination = contamination
        self.reject_fraction = reject_fraction
        self.n_clean = n_clean
        self.density_fraction = density_fraction
        self.test_fraction = test_fraction
        self.recall_fpr = recall_fpr
        self.max_inspect_factor = max_inspect_factor
        self.n_probe = n_probe
        self.split_seed = split_seed
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.mixture_components = mixture_components
        self.covariance_type = covariance_type
        self.support_fraction = support_fraction
        self.n_neighbors = n_neighbors
        self.anomaly_class = anomaly_class
        self.window = window
        self.window_stride = window_stride
        self.window_features = window_features
        self.n_window_features = n_window_features
        self.data = data

    # --- set-up -----------------------------------------------------------------------
    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        self._validate()
        X, y, spans = load_dataset(self.dataset, data=self.data,
                                   anomaly_class=self.anomaly_class, window=self.window,
                                   window_stride=self.window_stride,
                                   window_features=self.window_features,
                                   n_window_features=self.n_window_features)
        split = build_split(y, spans, self.test_fraction, self.n_probe, self.split_seed)
        if self.n_clean > split.clean.size:
            raise ValueError(f"domain.n_clean={self.n_clean} exceeds the clean pool of "
                             f"{split.clean.size} points; use at most {split.clean.size}")
        if self.contamination > 0 and split.stream_anomaly.size == 0:
            raise ValueError("domain.contamination > 0 but the dataset has no anomalies "
                             "left for the stream")
        self._X = self._features(X, split.clean)
        self._y = y
        self._split = split
        self._det = make_detector(
            self.detector, self.reject_fraction, n_estimators=self.n_estimators,
            mixture_components=self.mixture_components, covariance_type=self.covariance_type,
            support_fraction=self.support_fraction, n_neighbors=self.n_neighbors)
        if self.density_fraction > 0 and not self._det.density:
            raise ValueError(f"domain.density_fraction={self.density_fraction} needs a density "
                             f"detector (envelope or gmm), not {self.detector!r}")
        self._ready = True

    def _validate(self) -> None:
        # the same checks as a config file gets, for loops built directly in Python
        from stabfw.core.parameters import params_model
        from stabfw.errors import ConfigError, format_validation_error

        try:
            params_model(type(self)).model_validate(self.get_params())
        except Exception as err:  # pydantic.ValidationError
            if hasattr(err, "errors"):
                raise ConfigError(format_validation_error(err, prefix="domain")) from None
            raise

    def _features(self, X: np.ndarray, clean: np.ndarray) -> np.ndarray:
        """Standardise with the clean pool's statistics; optionally project (PCA)."""
        mu = X[clean].mean(axis=0)
        sd = X[clean].std(axis=0)
        Z = (X - mu) / np.where(sd > 1e-12, sd, 1.0)
        if self.n_components is not None:
            d = Z.shape[1]
            if self.n_components > d:
                raise ValueError(f"domain.n_components={self.n_components} exceeds the "
                                 f"{d} features")
            _, _, vt = np.linalg.svd(Z[clean], full_matrices=False)
            # fix each axis' sign so the projection does not depend on the SVD routine
            vt = vt * np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])[:, None]
            Z = Z @ vt[: self.n_components].T
        return Z

    @property
    def split(self):
        """The fixed data split (index arrays into the dataset's rows)."""
        self._setup()
        return self._split

    @property
    def features(self) -> np.ndarray:
        """Every row's standardised feature vector."""
        self._setup()
        return self._X

    @property
    def labels(self) -> np.ndarray:
        """Every row's label (1 = anomaly)."""
        self._setup()
        return self._y

    @property
    def detector_spec(self) -> Detector:
        """The configured detector."""
        self._setup()
        return self._det

    def capabilities(self) -> Capabilities:
        """Only parametric detectors can take θ back (functional signatures cannot)."""
        return replace(super().capabilities(),
                       with_theta=make_detector(self.detector, self.reject_fraction).parametric)

    # --- container --------------------------------------------------------------------
    def data_size(self, data: Any) -> int:
        return 0 if data is None else len(data)

    def concat(self, parts: list[Any]) -> LabelledBatch:
        return LabelledBatch.concat(parts)

    def subsample(self, data: LabelledBatch, index: np.ndarray) -> LabelledBatch:
        return data.take(index)

    def _batch(self, rows: np.ndarray, source: int) -> LabelledBatch:
        rows = np.asarray(rows, dtype=np.int64)
        return LabelledBatch(self._X[rows], self._y[rows].copy(),
                             np.full(rows.size, source, dtype=np.int8))

    # --- the loop ---------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator) -> LabelledBatch:
        self._setup()
        rows = np.sort(rng.choice(self._split.clean, size=self.n_clean, replace=False))
        return self._batch(rows, TRUSTED)

    def fit(self, data: LabelledBatch, init: DetectorState | None,
            rng: np.random.Generator) -> DetectorState:
        self._setup()
        # only the features reach the detector; labels are bookkeeping
        model, threshold = self._det.fit(np.asarray(data.X, dtype=float),
                                         None if init is None else init.model, rng)
        stats = data.stats
        y, src = data.y, data.source
        n = max(len(data), 1)
        info = {
            "train_anomaly_frac": int(np.count_nonzero(y == 1)) / n,
            "train_self_selected_frac": int(np.count_nonzero(src != TRUSTED)) / n,
            "cumulative_anomalies": float(stats.cumulative_anomalies if stats else 0),
        }
        if stats is not None:
            info.update({
                "stream_batch": float(stats.inspected),
                # no stream point admitted (λ = 0, or all density samples): none was an anomaly
                "admitted_anomaly_frac": (stats.admitted_anomalies / stats.admitted
                                          if stats.admitted else 0.0),
                "forced": float(stats.forced),
            })
        return DetectorState(model, threshold, info)

    def generate(self, state: DetectorState, n: int, rng: np.random.Generator) -> LabelledBatch:
        self._setup()
        n_density = round(self.density_fraction * n) if self._det.density else 0
        n_stream = n - n_density
        admitted, stats = self.select(state, n_stream, rng)
        parts = [admitted]
        if n_density:
            Xs = self._det.sample(state.model, n_density, rng)
            parts.append(LabelledBatch(Xs, np.full(n_density, SYNTHETIC, np.int8),
                                       np.full(n_density, DENSITY, np.int8)))
        stats = dataclasses.replace(stats, density=n_density)
        out = LabelledBatch.concat([p for p in parts if len(p)]) if n else admitted
        return LabelledBatch(out.X, out.y, out.source, stats)

    def select(self, state: DetectorState, n: int,
               rng: np.random.Generator) -> tuple[LabelledBatch, StreamStats]:
        """Admit ``n`` points of a fresh contaminated stream by the detector's own verdict.

        The stream is consumed in chunks: each point is an anomaly with probability
        ``contamination``, drawn without replacement from its pool within a generation
        (the pool is reshuffled when it runs out). Scores come from
        :meth:`stream_scores` (the whole stream scored once per state); the batch ends at
        the ``n``-th point scoring at or below the threshold.

        Returns
        -------
        (LabelledBatch, StreamStats)
        """
        self._setup()
        prior = int(state.info.get("cumulative_anomalies", 0))
        if n <= 0:
            return (self._batch(np.empty(0, np.int64), ADMITTED),
                    StreamStats(cumulative_anomalies=prior))
        cap = max(math.ceil(self.max_inspect_factor * n), n)
        pools = (_Shuffled(self._split.stream_normal, rng),
                 _Shuffled(self._split.stream_anomaly, rng))
        scored = self.stream_scores(state)
        rows, scores = [], []
        n_seen = n_ok = 0
        chunk = max(32, math.ceil(1.25 * n / (1.0 - self.reject_fraction)))
        while n_ok < n and n_seen < cap:
            size = min(chunk, cap - n_seen)
            is_anom = rng.random(size) < self.contamination
            r = np.empty(size, dtype=np.int64)
            n_anom = int(np.count_nonzero(is_anom))  # np.sum costs a bool array 10× more
            r[~is_anom] = pools[0].take(size - n_anom)
            r[is_anom] = pools[1].take(n_anom)
            s = scored[r]
            rows.append(r)
            scores.append(s)
            n_seen += size
            n_ok += int(np.count_nonzero(s <= state.threshold))
        rows_all, s_all = np.concatenate(rows), np.concatenate(scores)
        ok = s_all <= state.threshold
        if n_ok >= n:
            # the batch is the stream prefix up to the n-th admitted point
            stop = int(np.flatnonzero(ok)[n - 1]) + 1
            rows_all, s_all, ok = rows_all[:stop], s_all[:stop], ok[:stop]
            take = np.flatnonzero(ok)
            forced = 0
        else:
            rejected = np.flatnonzero(~ok)
            extra = rejected[np.argsort(s_all[rejected], kind="stable")[: n - n_ok]]
            take = np.sort(np.concatenate([np.flatnonzero(ok), extra]))
            forced = extra.size
        labels = self._y[rows_all]
        n_anom_taken = int(np.count_nonzero(labels[take] == 1))
        forced_anom = int(np.count_nonzero(labels[extra] == 1)) if forced else 0
        stats = StreamStats(
            inspected=int(rows_all.size),
            inspected_anomalies=int(np.count_nonzero(labels == 1)),
            admitted=int(take.size),
            admitted_anomalies=n_anom_taken,
            forced=int(forced),
            forced_anomalies=forced_anom,
            cumulative_anomalies=prior + n_anom_taken,
        )
        return self._batch(rows_all[take], ADMITTED), stats

    def stream_scores(self, state: DetectorState) -> np.ndarray:
        """Scores of all stream points under ``state``, by row of the feature matrix.

        Computed once per fitted state, in one call over the whole stream (scoring point
        by point in chunks cost LOF several times a fit), then reused: by
        :meth:`select` when this state filters the next generation's stream and by
        :meth:`metrics` for the admit rates. Rows outside the stream hold NaN. A point's
        score does not depend on which other points are scored with it, so reading it
        from here is the same as scoring it where it is drawn.
        """
        self._setup()
        cached = state.scores.get("stream")
        if cached is None:
            rows = np.concatenate([self._split.stream_normal, self._split.stream_anomaly])
            cached = np.full(self._X.shape[0], np.nan)
            if rows.size:
                cached[rows] = self._det.score(state.model, self._X[rows])
            state.scores["stream"] = cached
        return cached

    def params(self, state: DetectorState) -> np.ndarray:
        self._setup()
        if self._det.parametric:
            body = self._det.theta(state.model)
        else:
            body = self._det.score(state.model, self._X[self._split.probe])
        tail = self._det.threshold_to_theta(state.threshold)
        return np.concatenate([np.asarray(body, dtype=float), [tail]])

    def with_params(self, state: DetectorState, theta: np.ndarray) -> DetectorState:
        self._setup()
        if not self._det.parametric:
            raise NotImplementedError(
                f"detector {self.detector!r} is represented by a functional signature "
                "(scores on a probe set), which cannot be turned back into a model; "
                "use envelope or gmm for finite-difference Jacobians")
        theta = np.asarray(theta, dtype=float)
        model = self._det.with_theta(state.model, theta[:-1])
        return DetectorState(model, self._det.theta_to_threshold(theta[-1]), dict(state.info))

    def set_run_dir(self, path: Any) -> None:
        """Called by the runner: the stream scores of the first seed are recorded there,
        for the report's histograms."""
        self._run_dir = path

    def _record(self, rng, normal: np.ndarray, anomaly: np.ndarray, tau: float) -> None:
        # only the runner's metric draws name a (seed, generation); analyzers' do not
        from stabfw.domains.anomaly.figures import RECORDED_SEEDS, record_scores

        where = recording_target(getattr(self, "_run_dir", None), rng,
                                 self.__dict__.setdefault("_recorded_seeds", []), RECORDED_SEEDS)
        if where is not None:
            record_scores(self._run_dir, *where, normal, anomaly, tau)

    def report_figures(self, runs):
        """Histograms of the stream's scores, admitted vs rejected, per generation and λ."""
        from stabfw.domains.anomaly.figures import score_histograms

        return score_histograms(runs)

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        q = MetricInfo("quality", "higher")
        return {
            "roc_auc": q, "average_precision": q, "recall_at_fpr": q,
            "threshold": MetricInfo("other"),
            "test_fpr": MetricInfo("error", "lower", "share of test normals rejected"),
            "normal_admit_rate": MetricInfo("diversity", "higher",
                                            "share of the normal stream the detector admits"),
            "anomaly_admit_rate": MetricInfo("error", "lower"),
            "admitted_anomaly_frac": MetricInfo("error", "lower"),
            "anomalies_admitted_total": MetricInfo("other"),
            "train_anomaly_frac": MetricInfo("error", "lower"),
            "stream_batch": MetricInfo("other"),
        }

    def metrics(self, state: DetectorState, rng: np.random.Generator) -> dict[str, float]:
        self._setup()
        from sklearn.metrics import average_precision_score, roc_auc_score

        test = self._split.test
        y = self._y[test]
        s = self._det.score(state.model, self._X[test])
        both = 0 < y.sum() < y.size
        nan = math.nan
        # how the current detector treats the stream it will filter next: exact shares of
        # the stream pools it admits (defined at every generation, θ* included)
        sn, sa = self._split.stream_normal, self._split.stream_anomaly
        tau = state.threshold
        scored = self.stream_scores(state)
        normal_admit = float(np.mean(scored[sn] <= tau))
        anomaly_admit = float(np.mean(scored[sa] <= tau)) if sa.size else nan
        self._record(rng, scored[sn], scored[sa], tau)
        info = state.info
        return {
            "roc_auc": float(roc_auc_score(y, s)) if both else nan,
            "average_precision": float(average_precision_score(y, s)) if both else nan,
            "recall_at_fpr": recall_at_fpr(y, s, self.recall_fpr) if both else nan,
            "threshold": float(tau),
            "test_fpr": float(np.mean(s[y == 0] > tau)),
            "normal_admit_rate": normal_admit,
            "anomaly_admit_rate": anomaly_admit,
            "admitted_anomaly_frac": info.get("admitted_anomaly_frac", 0.0),
            "anomalies_admitted_total": info.get("cumulative_anomalies", 0.0),
            "train_anomaly_frac": info.get("train_anomaly_frac", 0.0),
            "stream_batch": info.get("stream_batch", 0.0),
        }


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Largest recall over thresholds whose false-positive rate is at most ``fpr``.

    The threshold sweep is scikit-learn's ROC curve (``score ≥ t`` flags an anomaly).

    References
    ----------
    Fawcett, "An introduction to ROC analysis", Pattern Recognit. Lett. 27(8), 2006.
    """
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(y, scores)
    return float(t[f <= fpr + 1e-12].max())


class _Shuffled:
    """Draws without replacement from a pool, reshuffling it when it runs out."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator):
        self.pool, self.rng = pool, rng
        self.order, self.pos = None, 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.order is None or self.pos >= self.order.size:
                self.order, self.pos = self.rng.permutation(self.pool), 0
            got = self.order[self.pos:self.pos + k]
            self.pos += got.size
            k -= got.size
            out.append(got)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

