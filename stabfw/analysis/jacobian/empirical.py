"""``empirical``: system identification of J from short perturbed trajectories.

Short trajectories of the map started at random perturbations of the point, and a
least-squares fit ``δ_{t+1} ≈ J δ_t`` of their deviations from the unperturbed trajectory
(exact DMD when the snapshots do not span ℝ^d). Cost and fit residual are reported.

References
----------
Schmid, "Dynamic mode decomposition of numerical and experimental data", J. Fluid Mech.
656, 2010. Tu et al., "On dynamic mode decomposition: theory and applications", J. Comput.
Dyn. 1(2), 2014 (exact DMD).
"""

from __future__ import annotations

import math

import numpy as np

from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization
from stabfw.run.analysis_config import EmpiricalOptions

__all__ = ["build"]


def build(lin: Linearization, o: EmpiricalOptions) -> JacobianOperator:
    """J fitted from ``K`` perturbed trajectories of ``T`` steps (a dense matrix)."""
    G, x = lin.G, lin.point
    d = x.size
    if o.n_steps is not None or o.n_trajectories is not None:
        T = o.n_steps or 2
        K = o.n_trajectories or max(2, math.ceil(1.5 * min(d, 60) / T))
    elif d <= 60:
        T, K = 2, max(2, d)
    else:
        T, K = 10, 4
    rng = np.random.default_rng(lin.random_state)
    eps = o.perturbation * max(1.0, float(np.linalg.norm(x)))
    ref = [x]
    for _ in range(T):
        ref.append(G(ref[-1]))
    Xs, Ys = [], []
    for _ in range(K):
        u = rng.standard_normal(d)
        y = x + eps * u / np.linalg.norm(u)
        for t in range(T):
            y_next = G(y, ref[t + 1] if o.fd_init == "fitted" else None)
            Xs.append(y - ref[t])
            Ys.append(y_next - ref[t + 1])
            y = y_next
    X, Y = np.stack(Xs, axis=1), np.stack(Ys, axis=1)
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    r = int(np.sum(s > s[0] * 1e-10)) if s.size and s[0] > 0 else 0
    if r == 0:
        raise FloatingPointError("empirical: the perturbed trajectories did not move")
    Ur, sr, Vr = U[:, :r], s[:r], Vt[:r].T
    J = (Y @ Vr / sr) @ Ur.T  # Y X⁺: J on span(X), zero on its complement
    resid = float(np.linalg.norm(Y - J @ X) / max(np.linalg.norm(Y), 1e-300))
    info = {"n_trajectories": K, "n_steps": T, "perturbation_abs": eps, "rank": r,
            "identified": r == d, "fit_residual": resid,
            # a large condition number amplifies the map's nonlinearity into J: use
            # at least d trajectories (their first snapshots are random directions)
            "snapshot_condition": float(s[0] / s[r - 1]),
            "reference_drift": float(np.linalg.norm(ref[-1] - x)),
            "n_perturbed_evaluations": K * T}
    ritz = np.linalg.eigvals(Ur.T @ Y @ Vr / sr) if r < d else None
    return lin.operator("empirical", lambda v: J @ v, lambda u: J.T @ u, matrix=J, info=info,
                        ritz_values=ritz, subspace=Ur if r < d else None)
