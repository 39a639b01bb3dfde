"""``dense``: autodiff of the whole retraining map of a differentiable domain (the oracle).

The fit is the exact arg-min of the mixed objective, computed by Newton's method; the map
that is differentiated is "sample(θ) → mixed loss → ``chord_steps`` Newton steps with the
Hessian frozen at the converged point", started from that point. Because the start is a
converged minimiser, autodiff through these steps gives the derivative of the arg-min
itself (each step contracts the derivative's error by ‖I − P·A‖ ≈ 0), without using the
implicit-function formula. ``torch.func.jacrev`` forms J densely.

References
----------
Bolte, Pauwels & Vaiter, "One-step differentiation of iterative algorithms", NeurIPS 2023
(differentiating Newton steps from a converged point).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization
from stabfw.analysis.jacobian.torch_objective import TorchObjective, newton_polish
from stabfw.core.differentiable import is_differentiable, math_attention
from stabfw.run.analysis_config import DenseOptions

__all__ = ["build", "map_jacobian"]


def build(lin: Linearization, o: DenseOptions) -> JacobianOperator:
    """J formed densely by ``torch.func.jacrev`` through Newton steps."""
    d = lin.point.size
    if d > o.max_dense_dim:
        raise ValueError(f"method='dense' forms a {d}×{d} Jacobian; θ has more than "
                         f"max_dense_dim={o.max_dense_dim} entries (raise it or use "
                         "'implicit')")
    T = TorchObjective(lin.loop, lin.G, lin.point, o.n_synthetic)
    torch = T.torch
    with math_attention():
        def solve(th, g):
            Hm = T.hessian(th, o.chunk_size)
            return torch.linalg.solve(0.5 * (Hm + Hm.T), g)

        th0, gmax, its = newton_polish(T, lin.image, o.newton_tol, o.newton_max_iter, solve)
        Hm = T.hessian(th0, o.chunk_size)
        Hm = 0.5 * (Hm + Hm.T)
        eig = torch.linalg.eigvalsh(Hm)
        P = torch.linalg.inv(Hm)
        th0 = th0.detach()

        def F(s):
            t = th0
            for _ in range(o.chord_steps):
                t = t - P @ T.gradf(t, s)
            return t

        J = torch.func.jacrev(F, chunk_size=o.chunk_size)(T.x).detach().numpy()
    info = {"newton_iterations": its, "fit_grad_max": gmax,
            "hessian_min_eig": float(eig[0]), "hessian_max_eig": float(eig[-1]),
            "chord_steps": o.chord_steps, "n_synthetic": T.n_synthetic,
            "fitted_point_shift": float(np.linalg.norm(th0.numpy() - lin.image))}
    if float(eig[0]) <= 0:
        info["warning"] = ("the mixed objective's Hessian is not positive definite at the "
                           "fitted point: not a strict local minimum, J is not defined")
    return lin.operator("dense", lambda v: J @ v, lambda u: J.T @ u, matrix=J, info=info)


def map_jacobian(loop: Any, G: Any, options: DenseOptions | dict[str, Any] | None = None
                 ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(x, G(x)) ↦ J(x)``, G's Jacobian formed by :func:`build` at any point: what a
    Newton fixed-point solve (``analysis.solve.method: newton``) takes a step with."""
    if not is_differentiable(loop):
        raise TypeError(f"a Newton fixed-point solve forms J by autodiff: {type(loop).__name__} "
                        "is not a differentiable domain (see stabfw.core.differentiable); "
                        "use 'anderson' or 'picard'")
    o = options if isinstance(options, DenseOptions) else DenseOptions.model_validate(
        options or {})

    def jacobian(x: np.ndarray, gx: np.ndarray) -> np.ndarray:
        return build(Linearization(loop, G, np.asarray(x, float), np.asarray(gx, float),
                                   "given"), o).matrix

    return jacobian
