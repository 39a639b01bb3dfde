"""The contraction rate of a panel of trajectories: a bias-corrected AR(1)/VAR(1) estimate
with a bootstrap interval over seeds.

Model: seed s follows ``θ_{s,t+1} = c_s + J θ_{s,t} + ε_{s,t+1}`` (one intercept per seed —
each seed's real data has its own fixed point), ε independent over time with covariance Σ.
The within (fixed-effects) regression is biased by O(1/T) on short panels (Nickell 1981),
and its split-panel jackknife is biased again on panels that start away from the fixed
point and settle. This module uses first differences instead, which remove ``c_s``
whatever the starting point:

    Δ_t = J Δ_{t−1} + (ε_t − ε_{t−1}),   E[Δ_{t−1}(ε_t − ε_{t−1})ᵀ] = −Σ.

The least-squares slope of Δ_t on Δ_{t−1} is therefore biased by −Σ B⁻¹ (B = E Δ_{t−1}Δ_{t−1}ᵀ).
The correction is analytic: Σ is estimated jointly from the residual covariance,
``E[(Δ_t − JΔ_{t−1})(·)ᵀ] = 2Σ``, and J solves the two moment equations

    A = J B − ½ (C − J Aᵀ − A Jᵀ + J B Jᵀ),      A = ΣΔ_tΔ_{t−1}ᵀ, B = ΣΔ_{t−1}Δ_{t−1}ᵀ, C = ΣΔ_tΔ_tᵀ

(a quadratic; for a scalar rate ``ρ = (a + b − √(a² + b² − bc)) / b``, the root that is exact
on noise-free data). Neither moment assumes stationarity, so transient-then-stationary
panels are estimated without bias (to O(1/seeds)), and the rate is exact for deterministic
trajectories. It is in the family of Han & Phillips (2010), who use the same difference
moment with the stationary variance instead of the residual one.

The interval is the percentile interval of a bootstrap that resamples whole seeds (or,
with fewer than ``min_units`` seeds, blocks of consecutive generations of each seed), and
the standard error is the bootstrap standard deviation, so the two agree. The sums above
are additive over seeds, so a resample is one weighted sum: thousands cost milliseconds.

References
----------
Nickell, "Biases in dynamic models with fixed effects", Econometrica 49(6), 1981.
Han & Phillips, "GMM estimation for dynamic panels with fixed effects and strong
instruments at unity", Econometric Theory 26(1), 2010. Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993 (percentile interval; resampling independent units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabfw.analysis.results import AnalysisResult

__all__ = ["PanelRate", "difference_moments", "panel_rate", "solve_scalar", "solve_var"]


@dataclass(frozen=True)
class PanelRate(AnalysisResult):
    """A panel's contraction rate.

    Attributes
    ----------
    rate : float
        Spectral radius |λ_max| of the estimated J (NaN when it cannot be estimated).
    rate_ci : (float, float)
        Percentile bootstrap interval at ``confidence`` (NaN with too few units).
    rate_se : float
        Bootstrap standard deviation of the rate.
    eigenvalue : complex
        The dominant eigenvalue of J (its sign and angle tell oscillation).
    eigenvalue_real_ci : (float, float)
        Bootstrap interval of its real part.
    J : numpy.ndarray
        The estimated matrix (1 × 1 for the pooled scalar fit).
    fit : {"VAR(1)", "pooled AR(1)"}
    noise_var : float
        Trace of the estimated innovation covariance Σ (units of θ²).
    unit : {"seed", "block"}
        What the bootstrap resamples.
    n_units, n_pairs : int
    confidence : float
    status : {"ok", "too_few_units", "no_movement", "too_short"}
    """

    rate: float
    rate_ci: tuple[float, float]
    rate_se: float
    eigenvalue: complex
    eigenvalue_real_ci: tuple[float, float]
    J: np.ndarray
    fit: str
    noise_var: float
    unit: str
    n_units: int
    n_pairs: int
    confidence: float
    status: str = "ok"
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (J itself only when it is small)."""
        out = {"rate": self.rate, "rate_ci": list(self.rate_ci), "rate_se": self.rate_se,
               "eigenvalue": self.eigenvalue, "eigenvalue_real_ci": list(self.eigenvalue_real_ci),
               "fit": self.fit, "noise_var": self.noise_var, "unit": self.unit,
               "n_units": self.n_units, "n_pairs": self.n_pairs, "confidence": self.confidence,
               "status": self.status, **self.info}
        if self.J.size <= 100:
            out["J"] = self.J
        return self._plain(out)


def difference_moments(X: np.ndarray, block: int | None = None, pooled: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit sums ``A = ΣΔ_tΔ_{t−1}ᵀ``, ``B = ΣΔ_{t−1}Δ_{t−1}ᵀ``, ``C = ΣΔ_tΔ_tᵀ`` and
    pair counts of a panel ``X`` of shape (seeds, generations + 1, d).

    Parameters
    ----------
    block : int, optional
        Split each seed's pairs into blocks of this many generations (one unit each);
        default one unit per seed.
    pooled : bool
        Only the traces, as (units, 1, 1) arrays: what the pooled scalar fit needs, without
        forming d × d sums (θ can be a network's weights).

    Returns
    -------
    A, B, C : arrays (units, d, d), or (units, 1, 1) when ``pooled``
    n : array (units,)
    """
    D = np.diff(X, axis=1)                      # (S, T, d)
    prev, nxt = D[:, :-1, :], D[:, 1:, :]       # pairs (Δ_{t−1}, Δ_t)
    S, P, d = prev.shape
    L = P if block is None else max(int(block), 1)
    nb = -(-P // L)
    pad = nb * L - P
    if pad:  # zero pairs add nothing to any sum
        z = np.zeros((S, pad, d))
        prev, nxt = np.concatenate([prev, z], 1), np.concatenate([nxt, z], 1)
    prev = prev.reshape(S * nb, L, d)
    nxt = nxt.reshape(S * nb, L, d)
    spec = "ati,ati->a" if pooled else "ati,atj->aij"
    A, B, C = (np.einsum(spec, u, v) for u, v in ((nxt, prev), (prev, prev), (nxt, nxt)))
    if pooled:
        A, B, C = (m[:, None, None] for m in (A, B, C))
    n = np.full(S * nb, float(L))
    if pad:
        n.reshape(S, nb)[:, -1] = L - pad
    return A, B, C, n


def solve_scalar(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The scalar rate of the moment equations, elementwise: the root of
    ``½bρ² − (a + b)ρ + (a + ½c) = 0`` that is exact on noise-free data."""
    a, b, c = np.asarray(a, float), np.asarray(b, float), np.asarray(c, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = np.maximum(a * a + b * b - b * c, 0.0)  # < 0 only by sampling noise
        return np.where(b > 0, (a + b - np.sqrt(disc)) / b, np.nan)


def _newton_operator(M: np.ndarray, N: np.ndarray) -> np.ndarray:
    """Matrix of dJ ↦ dJ·M + N·dJᵀ on row-major vec(dJ), batched over the first axis."""
    d = M.shape[-1]
    eye = np.eye(d)
    # L[(k,l),(i,j)] = δ_ki M[j,l] + N[k,j] δ_li
    L = np.einsum("ki,...jl->...klij", eye, M) + np.einsum("...kj,li->...klij", N, eye)
    return L.reshape(*M.shape[:-2], d * d, d * d)


def solve_var(A: np.ndarray, B: np.ndarray, C: np.ndarray, iters: int = 30) -> np.ndarray:
    """J of the matrix moment equations, batched over the first axis (Newton's method
    from the scalar solution times the identity)."""
    A, B, C = (np.asarray(m, float) for m in (A, B, C))
    d = A.shape[-1]
    tr = lambda m: np.trace(m, axis1=-2, axis2=-1)  # noqa: E731
    rho0 = solve_scalar(tr(A), tr(B), tr(C))
    J = np.nan_to_num(rho0)[..., None, None] * np.eye(d)
    At = np.swapaxes(A, -1, -2)

    def residual(J):
        Jt = np.swapaxes(J, -1, -2)
        return J @ B - A - 0.5 * (C - J @ At - A @ Jt + J @ B @ Jt)

    G = residual(J)
    best, best_r = J.copy(), np.linalg.norm(G, axis=(-2, -1))
    for _ in range(iters):
        Jt = np.swapaxes(J, -1, -2)
        L = _newton_operator(B + 0.5 * At - 0.5 * B @ Jt, 0.5 * (A - J @ B))
        try:
            step = np.linalg.solve(L, -G.reshape(*G.shape[:-2], d * d, 1))
        except np.linalg.LinAlgError:
            break
        J = J + step.reshape(J.shape)
        G = residual(J)
        r = np.linalg.norm(G, axis=(-2, -1))
        # keep each element's lowest-residual iterate: Newton on a quadratic can jump to
        # the far root when a resample is nearly singular
        better = np.isfinite(r) & (r < best_r)
        best = np.where(better[..., None, None], J, best)
        best_r = np.where(better, r, best_r)
        if np.all(np.abs(step) <= 1e-13 * (1 + np.nanmax(np.abs(J)))):
            break
    J = best
    return J


def _dominant(J: np.ndarray) -> np.ndarray:
    ev = np.linalg.eigvals(J)
    idx = np.argmax(np.abs(ev), axis=-1)
    return np.take_along_axis(ev, idx[..., None], axis=-1)[..., 0]


def panel_rate(X: Any, confidence: float = 0.9, n_bootstrap: int = 1000, vector: bool | None = None,
               max_var_dim: int = 10, min_units: int = 10, random_state: int = 0) -> PanelRate:
    """Bias-corrected AR(1)/VAR(1) rate of a panel, with a bootstrap interval over seeds.

    Parameters
    ----------
    X : array (seeds, generations + 1, d) or (seeds, generations + 1)
    confidence : float
        Level of the percentile interval.
    n_bootstrap : int
        Resamples of the units.
    vector : bool, optional
        Fit a full VAR(1) (default when d ≤ ``max_var_dim`` and there are ten pairs per
        entry of J); else one rate common to every coordinate (exact for J = ρI).
    min_units : int
        Fewest seeds the bootstrap resamples; with fewer, each seed's generations are cut
        into blocks of ⌈√T⌉ (at least 5), and with fewer than this many blocks the interval
        is NaN (``status="too_few_units"``).
    random_state : int

    Returns
    -------
    PanelRate
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 2:
        X = X[..., None]
    if X.ndim != 3:
        raise ValueError(f"X must have shape (seeds, generations + 1, d); got {X.shape}")
    S, T1, d = X.shape
    nan2 = (math.nan, math.nan)
    if T1 < 3:
        return PanelRate(math.nan, nan2, math.nan, complex(math.nan), nan2, np.full((1, 1), np.nan),
                         "pooled AR(1)", math.nan, "seed", S, 0, confidence, "too_short")
    P = T1 - 2
    if vector is None:
        vector = 2 <= d <= max_var_dim and S * P >= 10 * d * d
    vector = vector and d >= 2  # a 1-D VAR is the scalar fit, solved in closed form
    unit, block = "seed", None
    if S < min_units:
        unit, block = "block", max(5, math.ceil(math.sqrt(P)))
    A, B, C, n = difference_moments(X, block, pooled=not vector)
    keep = n > 0
    A, B, C, n = A[keep], B[keep], C[keep], n[keep]
    U = A.shape[0]
    tr = lambda m: np.trace(m, axis1=-2, axis2=-1)  # noqa: E731
    As, Bs, Cs = A.sum(0), B.sum(0), C.sum(0)
    fit = "VAR(1)" if vector else "pooled AR(1)"
    if not np.all(np.isfinite(Bs)) or tr(Bs) <= 0:
        return PanelRate(math.nan, nan2, math.nan, complex(math.nan), nan2,
                         np.full((1, 1), np.nan), fit, math.nan, unit, U, int(n.sum()),
                         confidence, "no_movement")

    def solve(a, b, c):
        if vector:
            return solve_var(a, b, c)
        return solve_scalar(a[..., 0, 0], b[..., 0, 0], c[..., 0, 0])[..., None, None]

    J = solve(As, Bs, Cs)
    eig = complex(_dominant(J))
    R = Cs - J @ As.T - As @ J.T + J @ Bs @ J.T
    noise_var = float(tr(R)) / (2 * float(n.sum()))  # E[(Δ_t − JΔ_{t−1})²] = 2Σ
    if U < min_units or n_bootstrap < 20:
        return PanelRate(abs(eig), nan2, math.nan, eig, nan2, J, fit, noise_var, unit, U,
                         int(n.sum()), confidence, "too_few_units")
    rng = np.random.default_rng(random_state)
    W = rng.multinomial(U, np.full(U, 1.0 / U), size=n_bootstrap).astype(float)
    Jb = solve(*(np.einsum("bu,uij->bij", W, m) for m in (A, B, C)))
    eb = _dominant(Jb)
    rb = np.abs(eb)
    ok = np.isfinite(rb)
    alpha = 1 - confidence
    if ok.sum() < 20:
        ci, se, rci = nan2, math.nan, nan2
    else:
        lo, hi = np.quantile(rb[ok], [alpha / 2, 1 - alpha / 2])
        ci, se = (float(lo), float(hi)), float(np.std(rb[ok], ddof=1))
        rlo, rhi = np.quantile(eb.real[ok], [alpha / 2, 1 - alpha / 2])
        rci = (float(rlo), float(rhi))
    return PanelRate(abs(eig), ci, se, eig, rci, J, fit, noise_var, unit, U, int(n.sum()),
                     confidence, "ok", {"n_bootstrap": int(n_bootstrap)})
