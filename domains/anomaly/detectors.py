"""Anomaly detectors as the loop sees them: fit, score, θ, and (for densities) sampling.

Every detector scores points so that **higher means more anomalous** and carries a
decision threshold: the ``1 − reject_fraction`` quantile of its scores on its own training
set (scikit-learn's ``contamination`` convention, reused from the estimator's ``offset_``
where it computes one, so the loop adds no scoring pass to a fit).

* ``envelope`` — :class:`sklearn.covariance.EllipticEnvelope` (minimum covariance
  determinant, reweighted); score = squared robust Mahalanobis distance.
  θ = (location, log-Cholesky factor of the covariance); threshold as log τ.
* ``gmm`` — :class:`sklearn.mixture.GaussianMixture`; score = −log density.
  θ = (log weights, means, log variances (``diag``) or log-Cholesky factors (``full``)).
  Warm starts from the previous mixture.

Covariances enter θ through their log-Cholesky factor ``L`` (``Σ = L Lᵀ``, ``log L_ii`` on
the diagonal, ``L_ij`` below it) and weights through their logarithms, so that every θ —
including the perturbed ones a finite-difference Jacobian probes — is a valid model.
* ``iforest`` — :class:`sklearn.ensemble.IsolationForest`; score = the path-length
  anomaly score. No smooth parameters: θ is a functional signature.
* ``lof`` — :class:`sklearn.neighbors.LocalOutlierFactor` (``novelty=True``); score =
  local outlier factor. Functional signature as for ``iforest``.

References
----------
Pinheiro & Bates, "Unconstrained parametrizations for variance-covariance matrices",
Statistics and Computing 6, 1996 (the log-Cholesky parametrisation). Rousseeuw & Van
Driessen, "A fast algorithm for the minimum covariance determinant estimator",
Technometrics 41(3), 1999. Liu, Ting & Zhou, "Isolation forest", ICDM 2008.
Breunig et al., "LOF: identifying density-based local outliers", SIGMOD 2000.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DETECTORS", "Detector", "cov_to_logchol", "logchol_to_cov", "make_detector"]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _quantile_threshold(scores: np.ndarray, reject_fraction: float) -> float:
    # same interpolation as sklearn's np.percentile(-scores, 100·q), negated
    return float(np.quantile(scores, 1.0 - reject_fraction))


@dataclass(frozen=True)
class Detector:
    """Hyperparameters of one detector kind; stateless (the fitted model is the state).

    Attributes
    ----------
    name : str
    parametric : bool
        Whether θ is the model's continuous parameters (``with_theta`` works) rather than
        a functional signature.
    density : bool
        Whether the model can sample from its fitted density.
    """

    name: str
    reject_fraction: float
    options: dict[str, Any]
    parametric: bool = False
    density: bool = False

    # --- fitting ----------------------------------------------------------------------
    def fit(self, X: np.ndarray, init: Any | None, rng: np.random.Generator) -> tuple[Any, float]:
        """Fit on ``X`` (warm-started from the model ``init`` where supported).

        Returns ``(model, threshold)``; the threshold is the ``1 − reject_fraction``
        quantile of the model's scores on ``X``.
        """
        raise NotImplementedError

    def score(self, model: Any, X: np.ndarray) -> np.ndarray:
        """Anomaly scores of ``X`` (higher = more anomalous)."""
        return -model.score_samples(X)

    # --- θ ----------------------------------------------------------------------------
    def threshold_to_theta(self, threshold: float) -> float:
        """The threshold as it enters θ (the identity unless a detector says otherwise)."""
        return float(threshold)

    def theta_to_threshold(self, value: float) -> float:
        """Inverse of :meth:`threshold_to_theta`."""
        return float(value)

    def theta(self, model: Any) -> np.ndarray:
        """The model's continuous parameters as a flat vector (parametric detectors)."""
        raise NotImplementedError(f"detector {self.name!r} has no continuous parameters")

    def with_theta(self, model: Any, theta: np.ndarray) -> Any:
        """A copy of ``model`` with its parameters set from ``theta``."""
        raise NotImplementedError(f"detector {self.name!r} has no continuous parameters")

    def sample(self, model: Any, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points from the fitted density."""
        raise NotImplementedError(f"detector {self.name!r} has no density to sample from")


def _lower_factor(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor; a numerically singular covariance (collinear features, a collapsed
    fit) gets the smallest diagonal jitter, relative to its scale, that makes it work."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        scale = np.maximum(np.abs(np.diagonal(cov, axis1=-2, axis2=-1)).mean(axis=-1), 1e-300)
        eye = np.eye(cov.shape[-1])
        for eps in 10.0 ** np.arange(-12, -2):
            try:
                return np.linalg.cholesky(cov + (eps * scale)[..., None, None] * eye)
            except np.linalg.LinAlgError:
                continue
        raise


def cov_to_logchol(cov: np.ndarray) -> np.ndarray:
    """Log-Cholesky vector of a covariance: row-major lower triangle of ``L`` (Σ = L Lᵀ)
    with ``log L_ii`` in place of the diagonal; batched over leading axes.

    References
    ----------
    Pinheiro & Bates, Statistics and Computing 6, 1996.
    """
    cov = np.asarray(cov, dtype=float)
    d = cov.shape[-1]
    L = _lower_factor(cov)
    rows, cols = np.tril_indices(d)
    out = L[..., rows, cols].copy()
    diag = rows == cols
    out[..., diag] = np.log(out[..., diag])
    return out


def logchol_to_cov(v: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`cov_to_logchol` (batched over leading axes)."""
    v = np.asarray(v, dtype=float)
    rows, cols = np.tril_indices(d)
    L = np.zeros((*v.shape[:-1], d, d))
    vals = v.copy()
    diag = rows == cols
    vals[..., diag] = np.exp(vals[..., diag])
    L[..., rows, cols] = vals
    return L @ np.swapaxes(L, -1, -2)


def _gaussian_draws(mean: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator):
    # eigh square root: works for a singular (collapsing) covariance too
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0.0, None))
    return mean + rng.standard_normal((n, mean.size)) @ root.T


class EnvelopeDetector(Detector):
    """Robust Gaussian (minimum covariance determinant) via ``EllipticEnvelope``."""

    def fit(self, X, init, rng):
        from sklearn.covariance import EllipticEnvelope

        model = EllipticEnvelope(contamination=self.reject_fraction,
                                 support_fraction=self.options.get("support_fraction"),
                                 random_state=_seed(rng))
        model.fit(X)
        # offset_ is the reject_fraction percentile of −dist_ on X (dist_ is under the final,
        # reweighted estimate), so −offset_ is our threshold without another scoring pass
        return model, float(-model.offset_)

    def score(self, model, X):
        return model.mahalanobis(X)

    # a squared Mahalanobis distance is positive: log τ keeps perturbed thresholds valid
    def threshold_to_theta(self, threshold):
        return float(np.log(max(threshold, 1e-300)))

    def theta_to_threshold(self, value):
        return float(np.exp(value))

    def theta(self, model):
        return np.concatenate([model.location_, cov_to_logchol(model.covariance_)])

    def with_theta(self, model, theta):
        from scipy.linalg import pinvh

        d = model.location_.size
        theta = np.asarray(theta, dtype=float)
        out = copy.copy(model)
        out.location_ = theta[:d].copy()
        out.covariance_ = logchol_to_cov(theta[d:], d)
        out.precision_ = pinvh(out.covariance_)
        return out

    def sample(self, model, n, rng):
        return _gaussian_draws(model.location_, model.covariance_, n, rng)


class MixtureDetector(Detector):
    """Gaussian mixture density; warm-started from the previous generation's mixture."""

    def fit(self, X, init, rng):
        from sklearn.mixture import GaussianMixture

        k = self.options["mixture_components"]
        cov_type = self.options["covariance_type"]
        kw: dict[str, Any] = {}
        if init is not None:
            # a θ set through with_params (a finite-difference probe) need not sum to one
            w = np.clip(init.weights_, 1e-6, None)
            kw = {"weights_init": w / w.sum(), "means_init": init.means_.copy(),
                  "precisions_init": init.precisions_.copy()}
        model = GaussianMixture(n_components=k, covariance_type=cov_type, reg_covar=1e-4,
                                random_state=_seed(rng), **kw)
        model.fit(X)
        if init is None:
            # cold fits come out in arbitrary component order; sort so θ is comparable
            model = self._reorder(model, np.lexsort(model.means_.T[::-1]))
        threshold = _quantile_threshold(-model.score_samples(X), self.reject_fraction)
        return model, threshold

    @staticmethod
    def _reorder(model, order):
        out = copy.copy(model)
        for name in ("weights_", "means_", "covariances_", "precisions_",
                     "precisions_cholesky_"):
            setattr(out, name, getattr(model, name)[order].copy())
        return out

    def theta(self, model):
        if model.covariance_type == "diag":
            cov = np.log(model.covariances_).ravel()
        else:
            cov = cov_to_logchol(model.covariances_).ravel()
        return np.concatenate([np.log(model.weights_), model.means_.ravel(), cov])

    def with_theta(self, model, theta):
        k, d = model.means_.shape
        theta = np.asarray(theta, dtype=float)
        out = copy.copy(model)
        logw = theta[:k] - np.logaddexp.reduce(theta[:k])  # renormalised
        out.weights_ = np.exp(logw)
        out.means_ = theta[k:k + k * d].reshape(k, d).copy()
        rest = theta[k + k * d:]
        if model.covariance_type == "diag":
            cov = np.exp(rest.reshape(k, d))
            out.covariances_ = cov
            out.precisions_cholesky_ = 1.0 / np.sqrt(cov)
            out.precisions_ = 1.0 / cov
        else:
            from scipy.linalg import solve_triangular

            cov = logchol_to_cov(rest.reshape(k, d * (d + 1) // 2), d)
            out.covariances_ = cov
            # the factor GaussianMixture itself stores: inverse of the lower Cholesky factor, ᵀ
            chol = np.stack([solve_triangular(_lower_factor(c), np.eye(d), lower=True).T
                             for c in cov])
            out.precisions_cholesky_ = chol
            out.precisions_ = chol @ np.swapaxes(chol, -1, -2)
        return out

    def sample(self, model, n, rng):
        k, d = model.means_.shape
        w = np.clip(model.weights_, 0.0, None)
        comp = rng.choice(k, size=n, p=w / w.sum())
        out = np.empty((n, d))
        for j in range(k):
            idx = np.flatnonzero(comp == j)
            if idx.size == 0:
                continue
            cov = (np.diag(model.covariances_[j]) if model.covariance_type == "diag"
                   else model.covariances_[j])
            out[idx] = _gaussian_draws(model.means_[j], cov, idx.size, rng)
        return out


class ForestDetector(Detector):
    """Isolation forest, refitted from scratch (new trees) every generation."""

    def fit(self, X, init, rng):
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(n_estimators=self.options["n_estimators"],
                                contamination=self.reject_fraction, random_state=_seed(rng))
        model.fit(X)
        return model, float(-model.offset_)


class LOFDetector(Detector):
    """Local outlier factor in novelty mode; training scores come from the fit itself."""

    def fit(self, X, init, rng):
        from sklearn.neighbors import LocalOutlierFactor

        k = max(1, min(self.options["n_neighbors"], X.shape[0] - 1))
        model = LocalOutlierFactor(n_neighbors=k, novelty=True,
                                   contamination=self.reject_fraction)
        model.fit(X)
        # offset_ = reject_fraction percentile of negative_outlier_factor_ (the training
        # LOFs, each point left out of its own neighbourhood)
        return model, float(-model.offset_)


DETECTORS: dict[str, tuple[type[Detector], bool, bool]] = {
    # name: (class, parametric, density)
    "envelope": (EnvelopeDetector, True, True),
    "gmm": (MixtureDetector, True, True),
    "iforest": (ForestDetector, False, False),
    "lof": (LOFDetector, False, False),
}


def make_detector(name: str, reject_fraction: float, **options: Any) -> Detector:
    """The detector registered as ``name`` with its hyperparameters."""
    if name not in DETECTORS:
        raise ValueError(f"domain.detector: unknown detector {name!r}; "
                         f"choose one of {', '.join(DETECTORS)}")
    cls, parametric, density = DETECTORS[name]
    return cls(name=name, reject_fraction=reject_fraction, options=options,
               parametric=parametric, density=density)
