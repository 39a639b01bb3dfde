"""The Gaussian reference domain: a Gaussian refitted by maximum likelihood.

Real data come from a known d-dimensional Gaussian (or a user's array); the model is a
Gaussian with full, diagonal or known covariance fitted by maximum likelihood.

Sampling goes through sufficient statistics so that all seeds can advance in one array
operation: a sample of m points from N(μ, Σ) is built as ``x̄ + Q Aᵀ Lᵀ`` where
``x̄ = μ + L z/√m``, ``A`` is the Bartlett factor of a Wishart(m−1, I) scatter, ``Q`` an
orthonormal basis of centred normals and ``L Lᵀ = Σ``. The sample mean, the scatter and
the configuration ``Q`` are independent for Gaussian data, so the points are exactly
i.i.d. N(μ, Σ); the fitted parameters depend only on ``(z, A)``, which the vectorised
path draws from the same counter-based streams without building ``Q``. Both paths
therefore give the same numbers for the same seeds (up to floating-point rounding).

When a fit is one synthetic draw alone (``fully_synthetic``, full covariance), the
vectorised path carries the factor itself: ``L' = LA/√(m − ddof)`` is lower triangular,
so it is the Cholesky factor of the new Σ without factoring Σ. It stays exact after Σ's
condition number passes 1/ε (d = 31 within 100 generations at n = 100), where a float
Cholesky of Σ fails and the per-seed path, which refits Σ from points, falls back to a
square root that rounding dominates; log det then follows its closed form only on the
vectorised path.

References
----------
Bartlett, "On the theory of statistical regression", Proc. R. Soc. Edinburgh 53, 1933
(the Bartlett decomposition of a Wishart matrix). Anderson, *An Introduction to
Multivariate Statistical Analysis*, 3rd ed., Wiley 2003, Thm. 3.3.2 (independence of the
sample mean and scatter).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from stabfw.core.capabilities import MetricInfo
from stabfw.core.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.core.streams import (
    chisquares,
    key_of,
    normals,
    real_stream_generation,
    stream_keys,
    subkeys,
    tril_normals,
)
from stabfw.errors import ConfigError, short_repr

__all__ = ["GaussianLoop", "GaussianState"]


def _read_npy(path: Path, where: str) -> np.ndarray:
    """A numeric .npy file as floats, or a ConfigError saying what the file is instead."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic:
        raise ConfigError(f"{where}: the file is empty (0 bytes)")
    if magic != b"\x93NUMPY":
        raise ConfigError(f"{where}: not a .npy file (it does not start with numpy's header); "
                          "save the array with numpy.save, or give a .csv")
    try:
        X = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):  # an object array: never unpickled
            raise ConfigError(f"{where}: holds Python objects (dtype object), not numbers; save "
                              "a float array (numpy.save(path, X.astype(float)))") from None
        raise ConfigError(f"{where}: damaged .npy file ({str(err)[:160]})") from None
    except (OSError, EOFError) as err:
        raise ConfigError(f"{where}: damaged or truncated .npy file ({str(err)[:160]})") from None
    if X.dtype.kind not in "fiub":
        raise ConfigError(f"{where}: holds {X.dtype} values, not numbers; save a float array")
    return X.astype(float)

# sub-stream numbers inside one draw's key
_MEAN, _OFFDIAG, _CONFIG, _DIAG0 = 0, 1, 2, 10


@dataclass(frozen=True)
class GaussianState:
    """A fitted Gaussian: mean (d,) and covariance (d, d)."""

    mean: np.ndarray
    cov: np.ndarray


def _factor(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L with L Lᵀ = cov, batched over leading axes, and where L is a Cholesky factor.

    Cholesky wherever it succeeds; the symmetric PSD square root of the matrices where it
    fails (a collapsed covariance). The rule is applied matrix by matrix, so a seed gets
    the same factor whether it is factored alone (per-seed path) or in a batch; the
    batched call is tried first because failures are rare. Returns ``(L, chol)`` with
    ``chol`` a boolean array over the leading axes.
    """
    cov = np.asarray(cov, dtype=float)
    lead = cov.shape[:-2]
    if cov.shape[-1] == 1:
        return np.sqrt(np.clip(cov, 0, None)), cov[..., 0, 0] > 0
    try:
        return np.linalg.cholesky(cov), np.ones(lead, dtype=bool)
    except np.linalg.LinAlgError:
        pass
    flat = cov.reshape(-1, *cov.shape[-2:])
    out = _cholesky_or_nan(flat)
    ok = np.isfinite(out).all(axis=(-2, -1))
    if not ok.all():
        w, v = np.linalg.eigh(flat[~ok])
        # eigenvalues at rounding level are zeros: their square roots (√ε) would otherwise
        # make two roundings of one singular matrix give visibly different factors
        w = np.where(w > 1e-12 * np.abs(w).max(axis=-1, keepdims=True), w, 0.0)
        out[~ok] = (v * np.sqrt(w)[..., None, :]) @ np.swapaxes(v, -1, -2)
    return out.reshape(cov.shape), ok.reshape(lead)


def _cholesky_or_nan(cov: np.ndarray) -> np.ndarray:
    """Batched Cholesky that leaves NaN where a matrix is not positive definite.

    ``np.linalg.cholesky`` raises for the whole stack; its gufunc fills the failed
    matrices with NaN and computes the others exactly as alone. Without that gufunc,
    matrix by matrix.
    """
    gufunc = getattr(getattr(np.linalg, "_umath_linalg", None), "cholesky_lo", None)
    if gufunc is not None:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
            return gufunc(cov, signature="d->d")
    out = np.full_like(cov, np.nan)
    for i, c in enumerate(cov):
        try:
            out[i] = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            pass
    return out


def _bartlett(keys: np.ndarray, m: int, d: int) -> np.ndarray:
    """Lower-triangular A with A Aᵀ ~ Wishart(m − 1, I_d), one per key: (S, d, d)."""
    diag = np.arange(d)
    # entry i of the diagonal is sqrt(χ²_{m−1−i}) from sub-stream _DIAG0 + i: all in one call
    chi = chisquares(subkeys(keys[:, None], _DIAG0 + diag), (m - 1 - diag)[None, :])
    return tril_normals(subkeys(keys, _OFFDIAG), np.sqrt(chi))


def _draw(mean: np.ndarray, L: np.ndarray, m: int, keys: np.ndarray, need_scatter: bool):
    """Sufficient statistics of m points from N(mean, L Lᵀ), one set per key.

    Returns ``(xbar (S, d), scatter (S, d, d) or None, LA (S, d, d) or None)``: with more
    points than dimensions the scatter is ``LA (LA)ᵀ`` for a Bartlett factor ``A``, and ``LA``
    is returned too (lower triangular when ``L`` is).
    """
    S, d = mean.shape
    if m <= d:  # too few points for a Wishart: draw them directly
        Z = normals(subkeys(keys, _CONFIG), m * d).reshape(S, m, d)
        X = mean[:, None, :] + Z @ np.swapaxes(L, -1, -2)
        xbar = X.mean(axis=1)
        Xc = X - xbar[:, None, :]
        return xbar, np.swapaxes(Xc, -1, -2) @ Xc, None
    z = normals(subkeys(keys, _MEAN), d)
    xbar = mean + np.einsum("sij,sj->si", L, z) / math.sqrt(m)
    if not need_scatter:
        return xbar, None, None
    LA = L @ _bartlett(keys, m, d)
    return xbar, LA @ np.swapaxes(LA, -1, -2), LA


def _sample(mean: np.ndarray, L: np.ndarray, m: int, key: np.uint64) -> np.ndarray:
    """m i.i.d. points from N(mean, L Lᵀ) whose statistics equal :func:`_draw`'s."""
    d = mean.size
    if m == 0:
        return np.empty((0, d))
    keys = np.asarray([key], dtype=np.uint64)
    if m <= d:
        Z = normals(subkeys(keys, _CONFIG), m * d).reshape(m, d)
        return mean + Z @ L.T
    xbar = _draw(mean[None], L[None], m, keys, need_scatter=False)[0]
    A = _bartlett(keys, m, d)[0]
    Z = normals(subkeys(keys, _CONFIG), m * d).reshape(m, d)
    Q, _ = np.linalg.qr(Z - Z.mean(axis=0))
    return xbar[0] + Q @ A.T @ L.T


def _combine(n1, m1, s1, n2, m2, s2):
    """Pooled count, mean and scatter of two groups (batched; groups of size 0 allowed)."""
    n = n1 + n2
    w1 = np.divide(n1, n, out=np.zeros_like(np.asarray(n, float)), where=n > 0)
    mean = w1[..., None] * m1 + (1 - w1)[..., None] * m2
    delta = m1 - m2
    c = np.divide(n1 * n2, n, out=np.zeros_like(np.asarray(n, float)), where=n > 0)
    # two (S, d, d) temporaries instead of four: at d = 31 this was a tenth of a generation
    scatter = s1 + s2
    scatter += (c[..., None] * delta)[..., :, None] * delta[..., None, :]
    return n, mean, scatter


class GaussianLoop(SelfConsumingLoop, VectorizedLoop):
    """A d-dimensional Gaussian refitted by maximum likelihood on its own samples.

    Parameters
    ----------
    dim : int
        Dimension d.
    n : int
        Number of real samples.
    covariance : {"full", "diag", "known"}
        Fit the full covariance, only its diagonal, or only the mean (the covariance is
        then fixed to ``true_cov``).
    ddof : {0, 1}
        0 for the maximum-likelihood covariance, 1 for the unbiased one.
    true_mean : list of float, optional
        Mean of the real-data Gaussian (default zeros).
    true_cov : float or list, optional
        Its covariance: a scalar (times the identity), a diagonal (length d) or a full
        d×d matrix (default identity).
    data : str or array, optional
        Use these real points instead (a ``.npy``/``.csv`` path or an (n, d) array);
        ``n`` and ``dim`` then come from the data. These points are the whole real
        sample, so ``fresh_real`` has nothing new to draw and behaves as ``fixed_real``.

    Notes
    -----
    θ is ``(mean, covariance entries)``: the upper triangle for ``full``, the diagonal
    for ``diag``, nothing more for ``known``. Metrics: ``mean_sq_err_true``
    (‖μ_t − μ_true‖², with μ_true the data mean when ``data`` is given), ``cov_trace``,
    ``cov_logdet``.
    """

    test_params: ClassVar[dict[str, Any]] = {"dim": 2, "n": 30}

    def __init__(
        self,
        dim: Annotated[int, Field(ge=1)] = 1,
        n: Annotated[int, Field(ge=2)] = 100,
        covariance: Literal["full", "diag", "known"] = "full",
        ddof: Literal[0, 1] = 0,
        true_mean: list[float] | None = None,
        true_cov: float | list[float] | list[list[float]] | None = None,
        data: str | Any | None = None,
    ):
        self.dim = dim
        self.n = n
        self.covariance = covariance
        self.ddof = ddof
        self.true_mean = true_mean
        self.true_cov = true_cov
        self.data = data

    # --- set-up -----------------------------------------------------------------------
    def check_params(self) -> None:
        """The checks a config gets before any work (``stabfw validate`` makes them too).

        ``true_mean``: length ``dim``, finite; ``true_cov``: finite, a scalar, a diagonal of
        length ``dim`` or a symmetric positive-definite ``dim × dim`` matrix; ``n > ddof``;
        ``data``: an existing ``.npy``/``.csv`` file (or an array) of finite numbers, shape
        ``(n ≥ 2, d)``, not contradicting an explicit ``dim`` or ``n``, and not combined
        with ``true_mean`` / ``true_cov`` (the data's own mean and covariance play them).
        """
        if self.data is not None:
            X = self._checked_data()
            for name in ("true_mean", "true_cov"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"domain.{name}: not used when domain.data is given (the "
                                      "data's own mean and covariance play the truth); leave "
                                      f"{name} out")
            n, d = X.shape
            # dim and n come from the data; one set explicitly (not its default) must agree
            defaults = inspect.signature(GaussianLoop.__init__).parameters
            clash = [f"domain.{k}={v}" for k, v, got in (("dim", self.dim, d), ("n", self.n, n))
                     if v != defaults[k].default and v != got]
            if clash:
                raise ConfigError(f"domain.data: {self._data_name()} holds {n} points of "
                                  f"dimension {d}, but {' and '.join(clash)} were given; leave "
                                  "dim and n out (they are read from the data) or fix the data")
            count = n
        else:
            mu = self._checked_mean()
            self._checked_cov(mu.size)
            count = self.n
        if count - self.ddof < 1 and self.covariance != "known":
            raise ConfigError(f"domain.ddof: n={count} is too small for ddof={self.ddof}")

    def data_files(self) -> list[Path]:
        """The data file, when ``data`` is a path (its contents are in the run's fingerprint)."""
        return [Path(self.data)] if isinstance(self.data, (str, Path)) else []

    def size_hint(self) -> dict[str, int]:
        """``n_real`` and ``dim_theta`` from the parameters (or a ``.npy`` file's header)."""
        if self.data is None:
            n, d = self.n, self.dim
        else:
            shape = self._data_shape()
            if shape is None:
                return {}
            n, d = shape
        extra = {"full": d * (d + 1) // 2, "diag": d, "known": 0}[self.covariance]
        return {"n_real": int(n), "dim_theta": int(d + extra)}

    def _data_name(self) -> str:
        return str(self.data) if isinstance(self.data, (str, Path)) else "the inline array"

    def _data_shape(self) -> tuple[int, int] | None:
        if not isinstance(self.data, (str, Path)) or Path(self.data).suffix != ".npy":
            X = self._checked_data()
            return X.shape
        try:
            X = np.load(self.data, mmap_mode="r", allow_pickle=False)
            return (int(X.shape[0]), int(X.shape[1]) if X.ndim > 1 else 1)
        except Exception:
            return None

    def _checked_mean(self) -> np.ndarray:
        if self.true_mean is None:
            return np.zeros(self.dim)
        mu = np.asarray(self.true_mean, dtype=float)
        if mu.shape != (self.dim,):
            raise ConfigError(f"domain.true_mean: must have length dim={self.dim}, got "
                              f"{mu.size} value(s)")
        if not np.all(np.isfinite(mu)):
            raise ConfigError(f"domain.true_mean: must be finite numbers, got "
                              f"{short_repr(mu.tolist())}")
        return mu

    def _checked_cov(self, d: int) -> np.ndarray:
        try:
            return self._parse_cov(self.true_cov, d)
        except ValueError as err:
            raise ConfigError(f"domain.true_cov: {err}") from None

    def _checked_data(self) -> np.ndarray:
        """The real data, read and checked once (clear errors naming domain.data)."""
        cached = getattr(self, "_data_checked", None)
        if cached is None:
            cached = self._data_checked = self._load_data(self.data)
        return cached

    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        self.check_params()
        if self.data is not None:
            X = self._checked_data()
            self._data = X
            self._n, self._d = X.shape
            self._mu = X.mean(axis=0)
            self._sigma = np.cov(X, rowvar=False, ddof=0).reshape(self._d, self._d)
        else:
            self._data, self._n, self._d = None, self.n, self.dim
            self._mu = self._checked_mean()
            self._sigma = self._checked_cov(self.dim)
        self._L = _factor(self._sigma)[0]
        self._ready = True

    @staticmethod
    def _parse_cov(cov: Any, d: int) -> np.ndarray:
        if cov is None:
            return np.eye(d)
        try:
            c = np.asarray(cov, dtype=float)
        except (TypeError, ValueError):
            raise ValueError("must be a number, a list of d numbers or a d×d matrix") from None
        if not np.all(np.isfinite(c)):
            raise ValueError("must be finite numbers")
        if c.ndim == 0:
            out = float(c) * np.eye(d)
        elif c.shape == (d,):
            out = np.diag(c)
        elif c.shape == (d, d):
            out = c
        else:
            raise ValueError(f"must be a scalar, length {d} or {d}x{d}; got shape {c.shape}")
        if not np.allclose(out, out.T) or np.linalg.eigvalsh(out).min() <= 0:
            raise ValueError("must be symmetric positive definite (all eigenvalues > 0), got "
                             f"eigenvalues {np.round(np.linalg.eigvalsh((out + out.T) / 2), 4).tolist()}")
        return out

    @staticmethod
    def _load_data(data: Any) -> np.ndarray:
        if isinstance(data, (str, Path)):
            path = Path(data)
            where = f"domain.data: {path}"
            if not path.is_file():
                raise ConfigError(f"{where}: no such file; give an (n, d) array as .npy or .csv")
            if path.suffix == ".npy":
                X = _read_npy(path, where)
            elif path.suffix in (".csv", ".txt"):
                try:
                    X = np.loadtxt(path, delimiter=",", ndmin=2)
                except (ValueError, UnicodeDecodeError) as err:
                    raise ConfigError(f"{where}: cannot be read as comma-separated numbers "
                                      f"({str(err)[:160]}); one point per line, no header") from None
            else:
                raise ConfigError(f"{where}: unknown file type {path.suffix!r}; give a .npy or "
                                  ".csv file")
        else:
            where = "domain.data (inline)"
            try:
                X = np.asarray(data, dtype=float)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}: must be rows of numbers of one length "
                                  f"({str(err)[:160]})") from None
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[0] < 2:
            raise ConfigError(f"{where}: must be an (n ≥ 2, d) array of points; got shape "
                              f"{X.shape}")
        if not np.all(np.isfinite(X)):
            bad = int(np.sum(~np.isfinite(X)))
            raise ConfigError(f"{where}: holds {bad} non-finite value(s) (NaN or inf); the "
                              "real data must be finite")
        return X

    @property
    def n_real(self) -> int:
        """Number of real points."""
        self._setup()
        return self._n

    # --- the loop ---------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator) -> np.ndarray:
        self._setup()
        if self._data is not None:
            return self._data.copy()
        return _sample(self._mu, self._L, self._n, key_of(rng))

    def fit(self, data: np.ndarray, init: GaussianState | None, rng: np.random.Generator):
        self._setup()
        X = np.asarray(data, dtype=float)
        mean = X.mean(axis=0)
        if self.covariance == "known":
            return GaussianState(mean, self._sigma.copy())
        Xc = X - mean
        cov = Xc.T @ Xc / max(X.shape[0] - self.ddof, 1)
        if self.covariance == "diag":
            cov = np.diag(np.diag(cov))
        return GaussianState(mean, cov)

    def generate(self, state: GaussianState, n: int, rng: np.random.Generator) -> np.ndarray:
        self._setup()
        return _sample(state.mean, _factor(state.cov)[0], n, key_of(rng))

    def score(self, batch: np.ndarray, state: GaussianState) -> np.ndarray:
        """Log-density of each point under ``state`` (up to a constant shared by the batch):
        what ``sampling_bias`` and ``top_fraction`` read as quality."""
        L = _factor(state.cov)[0]
        X = np.asarray(batch, dtype=float) - state.mean
        z = np.linalg.lstsq(L, X.T, rcond=None)[0]  # L may be singular after a collapse
        return -0.5 * np.einsum("ij,ij->j", z, z)

    def params(self, state: GaussianState) -> np.ndarray:
        return self._theta(state.mean[None], state.cov[None])[0]

    def with_params(self, state: GaussianState, theta: np.ndarray) -> GaussianState:
        self._setup()
        d = self._d
        theta = np.asarray(theta, dtype=float)
        mean = theta[:d].copy()
        if self.covariance == "known":
            return GaussianState(mean, state.cov.copy())
        if self.covariance == "diag":
            return GaussianState(mean, np.diag(theta[d:]))
        cov = np.zeros((d, d))
        cov[np.triu_indices(d)] = theta[d:]
        return GaussianState(mean, cov + np.triu(cov, 1).T)

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        return {
            "mean_sq_err_true": MetricInfo("error", "lower", "‖μ̂ − μ_true‖² (squared data units)"),
            "cov_trace": MetricInfo("diversity", None, "trace of the fitted covariance (data units²)"),
            "cov_logdet": MetricInfo("diversity", None, "log det of the fitted covariance"),
        }

    def metrics(self, state: GaussianState, rng: np.random.Generator) -> dict[str, float]:
        self._setup()
        cov = state.cov[None]
        vals = self._metrics(state.mean[None], cov, *_factor(cov))
        return {k: float(v[0]) for k, v in vals.items()}

    def _theta(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        self._setup()
        if self.covariance == "known":
            return mean.copy()
        if self.covariance == "diag":
            return np.concatenate([mean, np.diagonal(cov, axis1=-2, axis2=-1)], axis=-1)
        iu = np.triu_indices(self._d)
        return np.concatenate([mean, cov[:, iu[0], iu[1]]], axis=-1)

    def _metrics(self, mean: np.ndarray, cov: np.ndarray, factor: np.ndarray | None = None,
                 chol: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if cov.shape[-1] == 1:  # slogdet's LU is the bulk of the cost at d = 1
            with np.errstate(divide="ignore"):
                sign, logdet = np.sign(cov[..., 0, 0]), np.log(np.abs(cov[..., 0, 0]))
        elif factor is not None and chol.all():
            # log det Σ = 2 Σ_i log L_ii from the Cholesky factor the batch already holds
            with np.errstate(divide="ignore"):
                logdet = 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)
            sign = np.ones_like(logdet)
        else:
            sign, logdet = np.linalg.slogdet(cov)
            if chol is not None:
                # not positive definite to Cholesky: a collapsed covariance whatever LU's
                # rounding says, so a seed reads the same alone and in a batch
                sign = np.where(chol, sign, 0.0)
        return {
            "mean_sq_err_true": np.sum((mean - self._mu) ** 2, axis=-1),
            "cov_trace": np.trace(cov, axis1=-2, axis2=-1),
            "cov_logdet": np.where(sign > 0, logdet, -np.inf),
        }

    # --- vectorised over seeds --------------------------------------------------------
    def supports_vectorized(self, config) -> str | None:
        if config.curate is not None or config.correct is not None:
            return ("curate/correct hooks act on each seed's synthetic points, which the "
                    "vectorised path never draws (it draws their sufficient statistics)")
        if config.policy == "accumulate_subsample":
            return "accumulate_subsample draws an index subset per seed"
        return None

    def _real_stats(self, seeds: np.ndarray, config, generation: int):
        S, d = seeds.size, self._d
        if self._data is not None:
            X = self._data
            mean = np.broadcast_to(X.mean(axis=0), (S, d)).copy()
            Xc = X - X.mean(axis=0)
            scatter = np.broadcast_to(Xc.T @ Xc, (S, d, d)).copy()
            return np.full(S, self._n), mean, scatter
        keys = stream_keys(seeds, real_stream_generation(config.policy, generation), "real")
        mu = np.broadcast_to(self._mu, (S, d))
        L = np.broadcast_to(self._L, (S, d, d))
        xbar, scatter, _ = _draw(mu, L, self._n, keys, need_scatter=True)
        return np.full(S, self._n), xbar, scatter

    def _fit_stats(self, count, mean, scatter):
        if self.covariance == "known":
            cov = np.broadcast_to(self._sigma, scatter.shape).copy()
        else:
            cov = scatter / np.maximum(count - self.ddof, 1)[:, None, None]
            if self.covariance == "diag":
                cov = cov * np.eye(self._d)
        return mean, cov

    def init_batch(self, seeds: np.ndarray, config) -> dict[str, Any]:
        self._setup()
        n, xbar, scatter = self._real_stats(seeds, config, 0)
        mean, cov = self._fit_stats(n, xbar, scatter)
        S, d = mean.shape
        return {"real": (n, xbar, scatter), **self._fitted(mean, cov),
                "pool": (np.zeros(S), np.zeros((S, d)), np.zeros((S, d, d))),
                "counts": (n, np.zeros(S))}

    def step_batch(self, batch: dict[str, Any], seeds: np.ndarray, generation: int, config):
        self._setup()
        S, d = batch["mean"].shape
        m = config.n_synthetic(self._n)
        keys = stream_keys(seeds, generation, "generate")
        need_scatter = self.covariance != "known"
        if m > 0:
            xs, ss, LA = _draw(batch["mean"], batch["factor"], m, keys, need_scatter)
        else:
            xs, ss, LA = np.zeros((S, d)), None, None
        if ss is None:
            ss = np.zeros((S, d, d))
        syn = fresh = (np.full(S, float(m)), xs, ss)
        if config.policy in ("accumulate",):
            syn = _combine(*batch["pool"], *syn)
            batch = {**batch, "pool": syn}
        if config.fully_synthetic:
            total = syn
        else:
            real = (batch["real"] if config.policy != "fresh_real"
                    else self._real_stats(seeds, config, generation))
            total = _combine(*real, *syn)
        mean, cov = self._fit_stats(*total)
        n_real = np.zeros(S) if config.fully_synthetic else np.full(S, self._n)
        if total is fresh and LA is not None and self.covariance == "full":
            # the fit is this draw alone: cov = F Fᵀ for the triangular F = LA / √(m − ddof),
            # so F is its Cholesky factor without factoring cov, and stays exact where cov's
            # condition number passed 1/ε and a Cholesky of it would fail
            F = LA / math.sqrt(max(m - self.ddof, 1))
            return {**batch, **self._fitted(mean, cov, F, batch["chol"]),
                    "counts": (n_real, syn[0])}
        return {**batch, **self._fitted(mean, cov), "counts": (n_real, syn[0])}

    @staticmethod
    def _fitted(mean: np.ndarray, cov: np.ndarray, factor: np.ndarray | None = None,
                chol: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The fitted batch with the factor the next generation samples with (it also gives
        log det). ``factor`` is a known factor of ``cov``, a Cholesky factor where ``chol``;
        the other seeds are factored afresh."""
        if factor is None:
            factor, chol = _factor(cov)
        elif not chol.all():
            factor, chol = factor.copy(), chol.copy()
            factor[~chol], chol[~chol] = _factor(cov[~chol])
        return {"mean": mean, "cov": cov, "factor": factor, "chol": chol}

    def params_batch(self, batch: dict[str, Any]) -> np.ndarray:
        return self._theta(batch["mean"], batch["cov"])

    def metrics_batch(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        out = self._metrics(batch["mean"], batch["cov"], batch.get("factor"), batch.get("chol"))
        out["n_real"], out["n_synthetic"] = batch["counts"]
        return out
