"""Spectra of a matrix-free operator ``v ↦ J v``: spectral radius, norm, leading eigenvalues.

Methods: ``dense`` (form the matrix with d applications, then LAPACK), ``power`` (power
iteration with a Rayleigh–Ritz step on the last two iterates, so a dominant complex pair
or a ±ρ pair is found too), and ``arnoldi`` (ARPACK's implicitly restarted Arnoldi through
:func:`scipy.sparse.linalg.eigs` on a ``LinearOperator``). The spectral norm comes from
Golub–Kahan–Lanczos bidiagonalisation (:func:`scipy.sparse.linalg.svds`) or from power
iteration on JᵀJ when the operator can apply Jᵀ; without Jᵀ it is only available from the
dense matrix.

References
----------
Saad, *Numerical Methods for Large Eigenvalue Problems*, 2nd ed., SIAM 2011, ch. 4 (power
and subspace iteration with Rayleigh–Ritz) and ch. 6 (Arnoldi). Lehoucq, Sorensen & Yang,
*ARPACK Users' Guide*, SIAM 1998. Golub & Van Loan, *Matrix Computations*, 4th ed., 2013,
§10.4 (Lanczos bidiagonalisation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs, svds

__all__ = [
    "CountingOperator",
    "Spectrum",
    "arnoldi",
    "dense_spectrum",
    "power_iteration",
    "spectral_norm",
    "spectrum",
]

SpectrumMethod = Literal["auto", "dense", "power", "arnoldi"]


class CountingOperator(LinearOperator):
    """A real square ``LinearOperator`` that counts its applications.

    Parameters
    ----------
    matvec : callable
        ``v ↦ J v`` on 1-D float arrays.
    dim : int
    rmatvec : callable, optional
        ``u ↦ Jᵀ u``.
    matrix : numpy.ndarray, optional
        The dense matrix when it is already known (``dense`` then costs nothing more).
    """

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], dim: int,
                 rmatvec: Callable[[np.ndarray], np.ndarray] | None = None,
                 matrix: np.ndarray | None = None):
        super().__init__(dtype=np.float64, shape=(dim, dim))
        self._mv, self._rmv, self.matrix = matvec, rmatvec, matrix
        self.n_matvecs = 0
        self.n_rmatvecs = 0

    @property
    def has_transpose(self) -> bool:
        """Whether Jᵀ u can be applied."""
        return self._rmv is not None or self.matrix is not None

    def _matvec(self, v):
        v = np.asarray(v).reshape(-1)
        self.n_matvecs += 1
        if np.iscomplexobj(v):
            return self._apply(self._mv, v.real) + 1j * self._apply(self._mv, v.imag)
        return self._apply(self._mv, v)

    def _rmatvec(self, u):
        if self._rmv is None:
            if self.matrix is None:
                raise NotImplementedError("this operator cannot apply the transpose Jᵀ")
            self.n_rmatvecs += 1
            return self.matrix.T @ np.asarray(u).reshape(-1)
        u = np.asarray(u).reshape(-1)
        self.n_rmatvecs += 1
        if np.iscomplexobj(u):
            return self._apply(self._rmv, u.real) + 1j * self._apply(self._rmv, u.imag)
        return self._apply(self._rmv, u)

    @staticmethod
    def _apply(f, v):
        return np.asarray(f(np.asarray(v, dtype=float)), dtype=float).reshape(-1)

    def to_dense(self) -> np.ndarray:
        """The matrix (d applications unless it is known)."""
        if self.matrix is None:
            eye = np.eye(self.shape[0])
            self.matrix = np.stack([self.matvec(eye[:, j]) for j in range(self.shape[0])], axis=1)
        return self.matrix


@dataclass(frozen=True)
class Spectrum:
    """Spectral summary of an operator.

    Attributes
    ----------
    spectral_radius : float
        max |eigenvalue|.
    spectral_norm : float
        Largest singular value (NaN when it could not be computed, see ``note``).
    eigenvalues : numpy.ndarray of complex
        Leading eigenvalues, by decreasing modulus.
    method : str
    n_matvecs, n_rmatvecs : int
        Operator applications spent on this spectrum.
    wall_time : float
    converged : bool
    note : str
    """

    spectral_radius: float
    spectral_norm: float
    eigenvalues: np.ndarray
    method: str
    n_matvecs: int
    n_rmatvecs: int
    wall_time: float
    converged: bool = True
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def _leading(ev: np.ndarray, k: int) -> np.ndarray:
    ev = np.asarray(ev, dtype=complex)
    order = np.lexsort((-ev.imag, -np.abs(ev)))
    return ev[order][:k]


def _as_op(op: Any) -> CountingOperator:
    if isinstance(op, CountingOperator):
        return op
    if isinstance(op, np.ndarray):
        if op.ndim != 2 or op.shape[0] != op.shape[1]:
            raise ValueError(f"need a square matrix, got shape {op.shape}")
        return CountingOperator(lambda v: op @ v, op.shape[0], lambda u: op.T @ u, matrix=op)
    if isinstance(op, LinearOperator):
        r = None
        try:
            op.rmatvec(np.zeros(op.shape[0]))
            r = op.rmatvec
        except (NotImplementedError, TypeError, ValueError):
            r = None
        return CountingOperator(op.matvec, op.shape[0], r)
    raise TypeError(f"need a CountingOperator, LinearOperator or square array, got {type(op)}")


def dense_spectrum(op: Any, k: int = 6) -> Spectrum:
    """All eigenvalues and the spectral norm from the dense matrix (LAPACK).

    References
    ----------
    Golub & Van Loan, *Matrix Computations*, 4th ed., 2013, §7.5 (the QR algorithm).
    """
    op = _as_op(op)
    t0, m0 = time.perf_counter(), op.n_matvecs
    M = op.to_dense()
    ev = np.linalg.eigvals(M)
    norm = float(np.linalg.norm(M, 2))
    return Spectrum(float(np.max(np.abs(ev))), norm, _leading(ev, k), "dense",
                    op.n_matvecs - m0, 0, time.perf_counter() - t0)


def power_iteration(op: Any, k: int = 2, tol: float = 1e-3, max_iter: int = 1000,
                    v0: np.ndarray | None = None, seed: int = 0, norm: bool = True) -> Spectrum:
    """Spectral radius by power iteration with a two-vector Rayleigh–Ritz step.

    Each iteration applies J once; the Ritz values of J on the span of the last two
    iterates estimate the dominant eigenvalue (or conjugate pair). Stops when the estimate
    changes by less than ``tol`` (relative) in two successive iterations.

    References
    ----------
    Saad, *Numerical Methods for Large Eigenvalue Problems*, 2nd ed., 2011, §4.1–4.2.
    """
    op = _as_op(op)
    d = op.shape[0]
    t0, m0 = time.perf_counter(), op.n_matvecs
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d) if v0 is None else np.asarray(v0, dtype=float).copy()
    v /= np.linalg.norm(v)
    w = op.matvec(v)
    est, hist, ritz = math.nan, [], np.array([0j])
    converged = False
    for _ in range(max_iter):
        nw = np.linalg.norm(w)
        if nw == 0 or not np.isfinite(nw):
            est, ritz = (0.0 if nw == 0 else math.inf), np.array([0j if nw == 0 else math.inf])
            converged = nw == 0
            break
        v_next = w / nw
        w_next = op.matvec(v_next)
        # Rayleigh–Ritz on span{v, v_next}: A v = nw·v_next is already known
        V = np.stack([v, v_next], axis=1)
        AV = np.stack([nw * v_next, w_next], axis=1)
        Q, R = np.linalg.qr(V)
        if abs(R[1, 1]) < 1e-12 * abs(R[0, 0]):  # v is (numerically) an eigenvector
            ritz = np.array([complex(float(v_next @ w_next))])
        else:
            H = Q.T @ AV @ np.linalg.inv(R)
            ritz = np.linalg.eigvals(H)
        new = float(np.max(np.abs(ritz)))
        hist.append(new)
        if math.isfinite(est) and abs(new - est) <= tol * max(new, 1e-300):
            if len(hist) >= 3 and abs(hist[-2] - hist[-3]) <= tol * max(new, 1e-300):
                est = new
                converged = True
                break
        est = new
        v, w = v_next, w_next
    nrm, note = math.nan, ""
    if norm and op.has_transpose:
        nrm = _power_norm(op, tol, max_iter, rng)
    elif norm:
        note = "spectral norm needs Jᵀ (not available for this operator)"
    return Spectrum(est, nrm, _leading(ritz, k), "power", op.n_matvecs - m0, op.n_rmatvecs,
                    time.perf_counter() - t0, converged, note, {"history": hist})


def _power_norm(op: CountingOperator, tol: float, max_iter: int, rng) -> float:
    v = rng.standard_normal(op.shape[0])
    v /= np.linalg.norm(v)
    est = math.nan
    for _ in range(max_iter):
        w = op.rmatvec(op.matvec(v))
        nw = float(np.linalg.norm(w))
        if nw == 0:
            return 0.0
        new = math.sqrt(nw)
        if math.isfinite(est) and abs(new - est) <= tol * new:
            return new
        est, v = new, w / nw
    return est


def spectral_norm(op: Any, tol: float = 1e-3, method: Literal["svds", "power"] = "svds") -> float:
    """Largest singular value of a matrix-free operator (needs Jᵀ).

    ``svds`` uses ARPACK's Lanczos bidiagonalisation; ``power`` iterates JᵀJ.

    References
    ----------
    Golub & Van Loan, *Matrix Computations*, 4th ed., 2013, §10.4.
    """
    op = _as_op(op)
    if not op.has_transpose:
        raise ValueError("the spectral norm of a matrix-free operator needs Jᵀ (rmatvec)")
    if method == "power" or op.shape[0] < 3:
        return _power_norm(op, tol, 10_000, np.random.default_rng(0))
    s = svds(op, k=1, tol=tol, return_singular_vectors=False,
             v0=np.random.default_rng(0).standard_normal(op.shape[0]))
    return float(np.max(s))


def arnoldi(op: Any, k: int = 6, tol: float = 1e-3, ncv: int | None = None,
            max_iter: int | None = None, seed: int = 0, norm: bool = True) -> Spectrum:
    """Leading eigenvalues by implicitly restarted Arnoldi (ARPACK via ``scipy``).

    Parameters
    ----------
    op : operator
    k : int
        Number of eigenvalues (of largest modulus).
    tol : float
        ARPACK's relative accuracy of the Ritz values.
    ncv : int, optional
        Krylov subspace size (default ``max(2k + 1, 20)``, capped at d).
    norm : bool
        Also compute the spectral norm when Jᵀ is available.

    References
    ----------
    Lehoucq, Sorensen & Yang, *ARPACK Users' Guide*, SIAM 1998.
    """
    op = _as_op(op)
    d = op.shape[0]
    if d <= 3:
        return dense_spectrum(op, k)
    t0, m0, r0 = time.perf_counter(), op.n_matvecs, op.n_rmatvecs
    kk = max(1, min(k, d - 2))
    ncv = min(d, ncv or max(2 * kk + 1, 20))
    v0 = np.random.default_rng(seed).standard_normal(d)
    converged, note = True, ""
    try:
        ev = eigs(op, k=kk, which="LM", tol=tol, ncv=ncv, v0=v0, maxiter=max_iter,
                  return_eigenvectors=False)
    except ArpackNoConvergence as err:
        ev, converged, note = err.eigenvalues, False, "ARPACK did not converge; partial result"
    ev = _leading(ev, k)
    nrm = math.nan
    if norm and op.has_transpose:
        nrm = spectral_norm(op, tol)
    elif norm:
        note = (note + "; " if note else "") + "spectral norm needs Jᵀ (not available)"
    rho = float(np.max(np.abs(ev))) if ev.size else math.nan
    return Spectrum(rho, nrm, ev, "arnoldi", op.n_matvecs - m0, op.n_rmatvecs - r0,
                    time.perf_counter() - t0, converged, note, {"ncv": ncv})


def spectrum(op: Any, method: SpectrumMethod = "auto", k: int = 6, tol: float = 1e-3,
             max_dense_dim: int = 40, **options: Any) -> Spectrum:
    """Spectral radius, norm and leading eigenvalues of ``op`` by ``method``.

    ``options`` go to the iterative method (``norm=False`` skips the spectral norm).

    ``auto`` uses the dense matrix when it is known or d ≤ ``max_dense_dim`` (forming it
    costs d applications), Arnoldi otherwise.
    """
    op = _as_op(op)
    if method == "auto":
        method = "dense" if (op.matrix is not None or op.shape[0] <= max_dense_dim) else "arnoldi"
    if method == "dense":
        options.pop("norm", None)
        return dense_spectrum(op, k)  # the norm comes free with the matrix
    if method == "power":
        return power_iteration(op, k=k, tol=tol, **options)
    if method == "arnoldi":
        return arnoldi(op, k=k, tol=tol, **options)
    raise ValueError(f"spectrum method must be auto, dense, power or arnoldi; got {method!r}")
