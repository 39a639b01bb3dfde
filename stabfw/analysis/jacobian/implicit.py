"""``implicit``: the implicit function theorem at the arg-min, matrix-free.

At θ̂ = G(θ), ``J = −A⁻¹C`` with A the Hessian of the mixed objective in the fitted
parameters and C its cross-derivative in the generating parameters. A v is a
Hessian-vector product, A⁻¹ conjugate gradients (optionally Jacobi-preconditioned), C v a
Jacobian-vector product through the reparameterised sampler; ``Jᵀ u = −Cᵀ A⁻¹ u`` by a
vector-Jacobian product. θ̂ is polished by Newton–CG first, so the formula holds to
``newton_tol``. Attention layers run under the math SDPA kernel (double backward).

References
----------
Krantz & Parks, *The Implicit Function Theorem*, Birkhäuser 2002. Pearlmutter, Neural
Computation 6(1), 1994. Hestenes & Stiefel, J. Res. NBS 49, 1952.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization
from stabfw.analysis.jacobian.torch_objective import (
    TorchObjective,
    conjugate_gradients,
    jacobi_diagonal,
    newton_polish,
)
from stabfw.core.differentiable import math_attention
from stabfw.run.analysis_config import ImplicitOptions

__all__ = ["build"]


def build(lin: Linearization, o: ImplicitOptions) -> JacobianOperator:
    """``v ↦ −A⁻¹ C v`` and ``u ↦ −Cᵀ A⁻¹ u`` at the polished fit."""
    T = TorchObjective(lin.loop, lin.G, lin.point, o.n_synthetic)
    d = lin.point.size
    maxiter = o.cg_maxiter or max(10 * d, 200)
    cg: list[int] = []
    negative = [False]

    with math_attention():
        def newton_solve(th, g):
            T.linearize(th)
            return conjugate_gradients(T.hvp_lin, g, 1e-8, maxiter)[0].detach()

        th, gmax, its = newton_polish(T, lin.image, o.newton_tol, o.newton_max_iter,
                                      newton_solve)
        th = th.detach()
        T.linearize(th)
        precond = jacobi_diagonal(T, d, lin.random_state) if o.preconditioner == "jacobi" \
            else None

    def solve_A(b):
        with math_attention():
            y, it, neg = conjugate_gradients(T.hvp_lin, b, o.cg_tol, maxiter, precond)
        cg.append(it)
        negative[0] |= neg
        return y.detach()

    def matvec(v):
        with math_attention():
            b = T.cvp_lin(T.t(v))
        return (-solve_A(b)).numpy()

    def rmatvec(u):
        y = solve_A(T.t(u))
        with math_attention():
            return (-T.ctvp_lin(y)).detach().numpy()

    def diagnostics() -> dict[str, Any]:
        out: dict[str, Any] = {**T.counts(),
                               "cg_iterations_mean": float(np.mean(cg)) if cg else 0.0,
                               "cg_iterations_max": int(max(cg)) if cg else 0,
                               "negative_curvature": negative[0]}
        if negative[0]:
            out["warning"] = ("conjugate gradients met negative curvature: the fitted point "
                              "is not a strict local minimum, J is not defined")
        return out

    info = {"newton_iterations": its, "fit_grad_max": gmax,
            "fitted_point_shift": float(np.linalg.norm(th.numpy() - lin.image)),
            "preconditioner": o.preconditioner, "cg_tol": o.cg_tol,
            "n_synthetic": T.n_synthetic}
    return lin.operator("implicit", matvec, rmatvec, info=info, diagnostics=diagnostics)
