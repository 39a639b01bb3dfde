"""The stability bounds of Bertrand et al. (ICLR 2024) and estimators of their constants.

Constants: α (strong convexity of the real-data training loss at θ*, i.e. strong concavity
of the log-likelihood), L (Lipschitz constant in x of the per-sample Hessian
``∇²_θ log p_θ(x)``) and ε (Wasserstein-1 distance between the model at θ* and the data).

* Theorem 1 (infinite samples): if ``λ(1 + Lε/α) < 1/2`` then θ* is locally stable and
  ``‖θ_t − θ*‖ ≤ ρ(λ)^t ‖θ_0 − θ*‖`` with ``ρ(λ) = λ(α + εL) / (α − λ(α + εL))``.
* Theorem 2 (n real samples): with probability ≥ (1 − δ)^t,
  ``‖θ_t − θ*‖ ≤ (ε_OPT + a·sqrt(log(b/δ)/n))·(1 − ρ^t)/(1 − ρ) + ρ^t ‖θ_0 − θ*‖``.

These are sufficient conditions: report them beside the measured spectral radius, never
instead of it (:func:`theorem1_report` flags a vacuous bound).

References
----------
Bertrand, Bose, Duplessis, Jiralerspong & Gidel, "On the Stability of Iterative Retraining
of Generative Models on their own Data", ICLR 2024, Theorems 1 and 2. Villani, *Optimal
Transport: Old and New*, Springer 2009, ch. 6 (W1). Bonneel, Rabin, Peyré & Pfister,
"Sliced and Radon Wasserstein barycenters of measures", JMIV 51, 2015 (sliced W1).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from stabfw.core.differentiable import math_attention, require_differentiable

__all__ = [
    "estimate_L",
    "estimate_alpha",
    "estimate_constants",
    "estimate_epsilon",
    "gaussian_mean_theorem2_constants",
    "theorem1_condition",
    "theorem1_curve",
    "theorem1_rate",
    "theorem1_report",
    "theorem2_bound",
]


def _check_nonneg(**kw: float) -> None:
    for name, v in kw.items():
        if not (v >= 0):  # also rejects NaN
            raise ValueError(f"{name} must be ≥ 0, got {v}")


def theorem1_condition(lam: float, alpha: float, L: float, eps: float) -> bool:
    """Theorem 1's sufficient condition ``λ(1 + Lε/α) < 1/2``.

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 1.
    """
    _check_nonneg(lam=lam, L=L, eps=eps)
    if not alpha > 0:
        return False
    return bool(lam * (1.0 + L * eps / alpha) < 0.5)


def theorem1_rate(lam: Any, alpha: float, L: float, eps: float) -> Any:
    """``ρ(λ) = λ(α + εL) / (α − λ(α + εL))``; ``inf`` where the denominator is ≤ 0.

    Accepts an array of λ. With ε = 0 it reduces to ``λ/(1 − λ)``. The rate is a
    contraction (ρ < 1) exactly when :func:`theorem1_condition` holds.

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 1.
    """
    _check_nonneg(L=L, eps=eps)
    lam_arr = np.asarray(lam, dtype=float)
    if np.any(lam_arr < 0):
        raise ValueError("lam must be ≥ 0")
    if not alpha > 0:
        out = np.full(lam_arr.shape, math.inf)
    else:
        c = alpha + eps * L
        den = alpha - lam_arr * c
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(den > 0, lam_arr * c / np.where(den > 0, den, 1.0), math.inf)
    return float(out) if out.ndim == 0 else out


def theorem2_bound(t: Any, n: int, delta: float, *, rho: float, a: float, b: float = 2.0,
                   eps_opt: float = 0.0, initial_distance: float = 0.0) -> Any:
    """Theorem 2's envelope on ‖θ_t − θ*‖, holding with probability ≥ (1 − δ)^t.

    ``(ε_OPT + a·sqrt(log(b/δ)/n))·(1 − ρ^t)/(1 − ρ) + ρ^t·‖θ_0 − θ*‖``
    (the geometric sum is ``t`` when ρ = 1).

    Parameters
    ----------
    t : int or array of int
        Generation(s).
    n : int
        Real samples.
    delta : float
        Per-generation failure probability, in (0, 1).
    rho : float
        Contraction constant (Theorem 1's ρ(λ), or any valid upper bound of the map's
        contraction).
    a, b : float
        Concentration constants of one generation's estimation error: with probability
        ≥ 1 − δ it is at most ``a·sqrt(log(b/δ)/n)``. For a Gaussian mean with known σ,
        see :func:`gaussian_mean_theorem2_constants`.
    eps_opt : float
        Optimisation error of each fit.
    initial_distance : float
        ‖θ_0 − θ*‖.

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 2.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    _check_nonneg(rho=rho, a=a, eps_opt=eps_opt, initial_distance=initial_distance)
    if not b > delta:
        raise ValueError(f"b must exceed delta (log(b/δ) > 0), got b={b}")
    t_arr = np.asarray(t, dtype=float)
    per_step = eps_opt + a * math.sqrt(math.log(b / delta) / n)
    geom = t_arr if rho == 1 else (1 - rho**t_arr) / (1 - rho)
    out = per_step * geom + rho**t_arr * initial_distance
    return float(out) if out.ndim == 0 else out


def gaussian_mean_theorem2_constants(sigma: float, lam: float) -> dict[str, float]:
    """Theorem 2's constants for a Gaussian mean with known σ and fixed real data.

    One generation's error is ``m/(n+m)·(ȳ − θ_t)`` with ``ȳ ~ N(θ_t, σ²/m)``, m = λn: a
    centred normal with standard deviation ``σ·sqrt(λ)/((1+λ)·sqrt(n))``; the two-sided
    Gaussian tail gives ``a = σ·sqrt(2λ)/(1+λ)``, ``b = 2``, ε_OPT = 0.
    """
    _check_nonneg(sigma=sigma, lam=lam)
    return {"a": sigma * math.sqrt(2 * lam) / (1 + lam), "b": 2.0, "eps_opt": 0.0}


# --- estimators of α, L, ε -----------------------------------------------------------------
def _torch_theta(theta: Any):
    import torch

    return torch.as_tensor(np.asarray(theta, dtype=np.float64))


def estimate_alpha(loop: Any, theta: Any, data: Any, max_dense_dim: int = 400,
                   tol: float = 1e-6) -> float:
    """α: the smallest eigenvalue of the Hessian of the real-data loss at θ.

    Dense (LAPACK) up to ``max_dense_dim`` parameters, Lanczos on Hessian-vector products
    (:func:`scipy.sparse.linalg.eigsh`) above. A non-positive value means θ is not a
    strict local minimum and Theorem 1 does not apply.

    References
    ----------
    Bertrand et al., ICLR 2024, Assumption 1 (strong concavity at θ*).
    """
    import torch

    require_differentiable(loop, "estimate_alpha")
    th = _torch_theta(theta)
    f = lambda t: loop.loss(t, data)  # noqa: E731
    with math_attention():
        if th.numel() <= max_dense_dim:
            H = torch.func.jacrev(torch.func.grad(f), chunk_size=64)(th).numpy()
            return float(np.linalg.eigvalsh(0.5 * (H + H.T))[0])
        from scipy.sparse.linalg import LinearOperator, eigsh

        g = torch.func.grad(f)

        def hvp(v):
            return torch.func.jvp(g, (th,), (torch.as_tensor(v, dtype=th.dtype),))[1].numpy()

        op = LinearOperator((th.numel(),) * 2, matvec=hvp, dtype=np.float64)
        return float(eigsh(op, k=1, which="SA", tol=tol, return_eigenvectors=False)[0])


def estimate_L(loop: Any, theta: Any, points: Any, n_alternations: int = 3,
               n_power: int = 3, seed: int = 0) -> float:
    """L: the largest x-derivative of the per-sample Hessian ``∇²_θ ℓ(θ, x)`` on ``points``.

    For each point, alternately maximise over a unit x-direction w (the gradient of
    ``uᵀ∇²ℓ u`` in x) and a unit θ-direction u (power iteration on ``∂_w ∇²ℓ``, a
    symmetric matrix): the result is ``max_x ‖∂_x ∇²_θ ℓ(θ, x)‖``, the local Lipschitz
    constant, maximised over the given points — an estimate from below of the supremum.
    Returns 0 when the Hessian does not depend on x (e.g. a Gaussian mean with known σ).

    References
    ----------
    Bertrand et al., ICLR 2024, Assumption 2 (L-Lipschitz Hessian in x).
    """
    import torch

    require_differentiable(loop, "estimate_L")
    th = _torch_theta(theta)
    X = torch.as_tensor(np.asarray(points, dtype=np.float64))
    if X.ndim == 1:
        X = X[:, None]
    gen = torch.Generator().manual_seed(seed)

    def hvp_at(x, u):  # ∇²_θ ℓ(θ, x) u for one point x
        g = torch.func.grad(lambda t: loop.loss(t, x[None]))
        return torch.func.jvp(g, (th,), (u,))[1]

    def dx_hvp(x, u, w):  # (∂_w ∇²_θ ℓ(θ, x)) u
        return torch.func.jvp(lambda xx: hvp_at(xx, u), (x,), (w,))[1]

    def grad_x_quad(x, u):  # ∇_x (uᵀ ∇²_θ ℓ(θ, x) u)
        return torch.func.grad(lambda xx: (u * hvp_at(xx, u)).sum())(x)

    # all points at once: one trace of the nested transforms per step
    v_dx, v_gq = torch.func.vmap(dx_hvp), torch.func.vmap(grad_x_quad)
    P = X.shape[0]
    with math_attention():
        u = torch.randn(P, th.numel(), generator=gen, dtype=th.dtype)
        u = u / u.norm(dim=1, keepdim=True)
        w_rand = torch.randn(P, X.shape[1], generator=gen, dtype=th.dtype)
        w_rand = w_rand / w_rand.norm(dim=1, keepdim=True)
        best = torch.zeros(P, dtype=th.dtype)
        for _ in range(n_alternations):
            gx = v_gq(X, u)
            gn = gx.norm(dim=1, keepdim=True)
            best = torch.maximum(best, gn[:, 0])
            w = torch.where(gn > 0, gx / gn.clamp_min(1e-300), w_rand)
            for _ in range(n_power):
                mu = v_dx(X, u, w)
                nmu = mu.norm(dim=1, keepdim=True)
                u = torch.where(nmu > 0, mu / nmu.clamp_min(1e-300), u)
            best = torch.maximum(best, (u * v_dx(X, u, w)).sum(dim=1).abs())
    return float(best.max()) if P else 0.0


def estimate_epsilon(model_samples: Any, data: Any, method: Literal["auto", "exact", "sliced",
                     "assignment"] = "auto", n_projections: int = 200, seed: int = 0) -> float:
    """ε: the Wasserstein-1 distance between samples of the model and the data.

    ``exact`` in one dimension (:func:`scipy.stats.wasserstein_distance`); ``sliced``
    (the mean over random directions of the 1-D distances of the projections, a lower
    bound of W1) or ``assignment`` (the exact empirical W1 by optimal matching of two
    equal-size samples, :func:`scipy.optimize.linear_sum_assignment`) in higher
    dimensions. ``auto``: exact in 1-D, sliced above.

    References
    ----------
    Villani, *Optimal Transport*, 2009, ch. 6; Bonneel et al., JMIV 51, 2015.
    """
    from scipy.stats import wasserstein_distance

    A = np.asarray(model_samples, dtype=float)
    B = np.asarray(data, dtype=float)
    A = A[:, None] if A.ndim == 1 else A
    B = B[:, None] if B.ndim == 1 else B
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"samples have dimension {A.shape[1]}, data {B.shape[1]}")
    D = A.shape[1]
    if method == "auto":
        method = "exact" if D == 1 else "sliced"
    if method == "exact":
        if D != 1:
            raise ValueError("method='exact' is for one-dimensional data; use 'sliced' or "
                             "'assignment'")
        return float(wasserstein_distance(A[:, 0], B[:, 0]))
    if method == "assignment":
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        if A.shape[0] != B.shape[0]:
            raise ValueError("method='assignment' needs equal sample sizes")
        C = cdist(A, B)
        r, c = linear_sum_assignment(C)
        return float(C[r, c].mean())
    if method == "sliced":
        rng = np.random.default_rng(seed)
        dirs = rng.standard_normal((n_projections, D))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        pa, pb = A @ dirs.T, B @ dirs.T
        return float(np.mean([wasserstein_distance(pa[:, j], pb[:, j])
                              for j in range(n_projections)]))
    raise ValueError(f"method must be auto, exact, sliced or assignment; got {method!r}")


def estimate_constants(loop: Any, theta: Any, real: Any, *, n_model_samples: int = 2000,
                       n_points: int = 16, seed: int = 0) -> dict[str, float]:
    """α, L and ε of a differentiable loop at θ (normally θ*) with real data ``real``.

    L is maximised over ``n_points`` points, half real and half model samples; ε compares
    ``n_model_samples`` model samples with the real data.
    """
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        samples = loop.sample(_torch_theta(theta), loop.draw_noise(n_model_samples, rng))
    samples = np.asarray(samples.detach().numpy() if hasattr(samples, "detach") else samples)
    real_np = np.asarray(real.detach().numpy() if hasattr(real, "detach") else real, dtype=float)
    real_np = real_np[:, None] if real_np.ndim == 1 else real_np
    k = max(n_points // 2, 1)
    pts = np.concatenate([real_np[rng.choice(len(real_np), min(k, len(real_np)), replace=False)],
                          samples.reshape(len(samples), -1)[:k]])
    return {
        "alpha": estimate_alpha(loop, theta, real),
        "L": estimate_L(loop, theta, pts, seed=seed),
        "eps": estimate_epsilon(samples.reshape(len(samples), -1), real_np, seed=seed),
    }


def theorem1_report(lam: float, alpha: float, L: float, eps: float,
                    measured_rho: float | None = None) -> dict[str, Any]:
    """Theorem 1 beside a measured spectral radius, flagged when the bound is vacuous.

    Returns a JSON-ready dict: the constants, ``condition`` (λ(1 + Lε/α) < 1/2),
    ``rate`` (ρ(λ), ``None`` when infinite), ``vacuous`` (the condition fails, so the
    theorem says nothing) and ``consistent`` (the rate is ≥ the measured ρ, as it must
    be whenever the condition holds).
    """
    cond = theorem1_condition(lam, alpha, L, eps) if alpha > 0 else False
    rate = theorem1_rate(lam, alpha, L, eps) if alpha > 0 else math.inf
    out: dict[str, Any] = {
        "lam": float(lam), "alpha": float(alpha), "L": float(L), "eps": float(eps),
        "condition": bool(cond),
        "condition_value": float(lam * (1 + L * eps / alpha)) if alpha > 0 else None,
        "rate": float(rate) if math.isfinite(rate) else None,
        "vacuous": not cond,
        "measured_rho": None if measured_rho is None else float(measured_rho),
    }
    if measured_rho is not None and cond:
        out["consistent"] = bool(rate >= measured_rho)
    if alpha <= 0:
        out["note"] = "α ≤ 0: θ is not a strict local minimum of the real-data loss"
    return out


def theorem1_curve(lams: Any, alpha: float, L: float, eps: float,
                   measured: Any | None = None, n_grid: int = 200) -> dict[str, Any]:
    """Theorem 1 along λ: the bound ρ(λ) on a grid up to ``max(lams)`` (``None`` where the
    condition fails), its value at each of ``lams``, and whether it stays ≥ the measured
    spectral radii there (as a sufficient condition must).

    References
    ----------
    Bertrand et al., ICLR 2024, Theorem 1.
    """
    lams = [float(x) for x in np.atleast_1d(np.asarray(lams, dtype=float))]
    grid = [float(x) for x in np.linspace(0, max(lams), n_grid)]

    def bound(lam: float) -> float | None:
        if not theorem1_condition(lam, alpha, L, eps):
            return None
        r = theorem1_rate(lam, alpha, L, eps)
        return float(r) if math.isfinite(r) else None

    out: dict[str, Any] = {"alpha": float(alpha), "L": float(L), "eps": float(eps),
                           "lam_grid": grid, "rate": [bound(x) for x in grid],
                           "at_lams": [bound(x) for x in lams]}
    if measured is not None:
        out["consistent"] = all(b is None or r is None or b >= r
                                for b, r in zip(out["at_lams"], measured))
    return out
