"""``finite_difference``: central (or forward) differences of the black-box retraining map.

Works for any learner that can take θ back (sklearn, sktime, ...): with common random
numbers ``G`` is deterministic, so ``(G(x + h u) − G(x − h u)) / 2h`` carries no sampling
noise, only the map's curvature (O(h²)) and its roughness.

References
----------
Nocedal & Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §8.1 (finite-difference
derivative approximations).
"""

from __future__ import annotations

import numpy as np

from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization
from stabfw.run.analysis_config import FiniteDifferenceOptions

__all__ = ["build"]


def build(lin: Linearization, o: FiniteDifferenceOptions) -> JacobianOperator:
    """``v ↦ J v`` by differences of G along v (one or two map evaluations each)."""
    G, x, gx = lin.G, lin.point, lin.image
    h = o.fd_step * max(1.0, float(np.linalg.norm(x)))
    central = o.fd_scheme == "central"
    init = gx if o.fd_init == "fitted" else None

    def matvec(v: np.ndarray) -> np.ndarray:
        nv = float(np.linalg.norm(v))
        if nv == 0:
            return np.zeros_like(x)
        u = v / nv
        if central:
            return (G(x + h * u, init) - G(x - h * u, init)) * (nv / (2 * h))
        return (G(x + h * u, init) - gx) * (nv / h)

    return lin.operator("finite_difference", matvec,
                        info={"fd_step_abs": h, "fd_scheme": o.fd_scheme})
