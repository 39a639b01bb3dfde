"""Checks before a stability claim: is the retraining map differentiable where J is taken,
and does the method's J agree with the map itself?

Finite differences of the map at two step sizes (h and 10h, central, common random
numbers) along a few probe directions:

* every difference exactly zero — the map does not move: it is piecewise constant (discrete
  draws such as ``rng.random(n) < p``, yes/no admission decisions), so "J = 0" says nothing;
* the two steps' directional derivatives differ by more than half their size — the map
  jumps between the steps (or is far from linear on that scale);
* the method's ``J u`` differs from the step-h difference by more than three times the two
  steps' disagreement (the difference's own error) plus 5 % — the method and the map do not
  agree (for ``empirical``: the regression fitted J badly).

The first two give status ``not_differentiable``, the third ``ill_conditioned``; so does
an ``empirical`` fit whose snapshot matrix has condition number above
:data:`MAX_SNAPSHOT_CONDITION` (noise and nonlinearity are amplified by that factor into J).

References
----------
Nocedal & Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §8.1 (truncation and
rounding error of finite differences). Golub & Van Loan, *Matrix Computations*, 4th ed.,
2013, §5.3.8 (sensitivity of least squares to the condition number).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["JUMP_RATIO", "MAX_SNAPSHOT_CONDITION", "check_map", "probe_directions"]

#: Relative disagreement of the h and 10h directional derivatives that counts as a jump.
JUMP_RATIO = 0.5
#: Snapshot condition number above which an empirical J is not trusted.
MAX_SNAPSHOT_CONDITION = 1e4
#: Relative slack of the method-vs-map comparison on top of the differences' own error.
AGREEMENT_SLACK = 0.05


def probe_directions(d: int, n_random: int, seed: int, basis: np.ndarray | None = None,
                     extra: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Unit probe directions: ``n_random`` random ones (inside ``basis``' span when given,
    e.g. the subspace an empirical J was identified on) and the ``extra`` ones."""
    rng = np.random.default_rng(seed + 7919)
    out = []
    for _ in range(n_random):
        u = rng.standard_normal(d if basis is None else basis.shape[1])
        u = u if basis is None else basis @ u
        out.append(u / np.linalg.norm(u))
    for v in extra or []:
        v = np.real(np.asarray(v)).astype(float)
        if np.linalg.norm(v) > 0:
            out.append(v / np.linalg.norm(v))
    return out


def check_map(G: Any, x: np.ndarray, image: np.ndarray, h: float, directions: list[np.ndarray],
              init: Any = None, apply_J: Any = None, method: str = "",
              method_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Probe ``G`` around ``x`` and judge whether a stability claim can be made.

    Parameters
    ----------
    G : RetrainingMap
    x, image : numpy.ndarray
        The point and ``G(x)``.
    h : float
        The smaller step (absolute); the other is ``10 h``.
    directions : list of unit vectors
    init : warm start of the perturbed refits
    apply_J : callable, optional
        ``u ↦ J u`` of the method under test (None for ``finite_difference`` itself).
    method : str
    method_info : dict, optional
        The method's diagnostics (``snapshot_condition`` of ``empirical``).

    Returns
    -------
    dict
        ``status`` (``ok`` / ``not_differentiable`` / ``ill_conditioned``), ``reason`` (a
        sentence), ``steps``, per-direction ``derivative_norm``, ``step_disagreement``,
        ``method_disagreement``, and ``n_evaluations`` spent.
    """
    out: dict[str, Any] = {"steps": [h, 10 * h], "n_directions": len(directions)}
    if G.n_synthetic == 0 and not G.config.fully_synthetic:
        out.update(status="ok", reason="λ = 0: the map does not depend on θ (J = 0 exactly)",
                   n_evaluations=0)
        return out
    scale = max(1.0, float(np.linalg.norm(image)))
    d_h, d_10, moved = [], [], []
    for u in directions:
        diffs = []
        for step in (h, 10 * h):
            delta = G(x + step * u, init) - G(x - step * u, init)
            diffs.append(delta / (2 * step))
            moved.append(float(np.linalg.norm(delta)) > 1e-13 * scale)
        d_h.append(diffs[0])
        d_10.append(diffs[1])
    out["n_evaluations"] = 4 * len(directions)
    n_h = np.array([np.linalg.norm(v) for v in d_h])
    n_10 = np.array([np.linalg.norm(v) for v in d_10])
    step_dis = np.array([np.linalg.norm(a - b) for a, b in zip(d_h, d_10)])
    out["derivative_norm"] = [float(v) for v in n_h]
    out["step_disagreement"] = [float(v) for v in step_dis]
    if not any(moved):
        out.update(status="not_differentiable", reason=(
            f"the map does not move under steps of {h:.2g} and {10 * h:.2g} in any of "
            f"{len(directions)} probe directions: it is piecewise constant (discrete draws "
            "or yes/no decisions), so its finite-difference J = 0 says nothing about stability"))
        return out
    dmax = float(max(n_h.max(), n_10.max()))
    rel = step_dis / np.maximum(np.maximum(n_h, n_10), 0.1 * dmax)
    out["step_disagreement_relative"] = [float(v) for v in rel]
    if rel.max() > JUMP_RATIO:
        i = int(np.argmax(rel))
        out.update(status="not_differentiable", reason=(
            f"directional derivatives at steps {h:.2g} and {10 * h:.2g} differ by "
            f"{100 * rel[i]:.0f} % (probe direction {i}): the map jumps between them "
            "(discrete draws or decisions) or is far from linear on that scale"))
        return out
    cond = (method_info or {}).get("snapshot_condition")
    if method == "empirical" and cond is not None and cond > MAX_SNAPSHOT_CONDITION:
        out.update(status="ill_conditioned", reason=(
            f"the empirical regression's snapshot matrix has condition number {cond:.3g} "
            f"(> {MAX_SNAPSHOT_CONDITION:.0e}): the perturbed trajectories line up with a few "
            "directions, and noise and nonlinearity are amplified by that factor into J"))
        # still compare below, for the record
    if apply_J is not None:
        dis, tol = [], []
        for u, a, e, na in zip(directions, d_h, step_dis, n_h):
            ju = np.asarray(apply_J(u), float)
            dis.append(float(np.linalg.norm(ju - a)))
            tol.append(float(3 * e + AGREEMENT_SLACK * max(na, float(np.linalg.norm(ju)),
                                                             0.1 * dmax)))
        out["method_disagreement"] = dis
        out["method_tolerance"] = tol
        bad = [i for i in range(len(dis)) if dis[i] > tol[i]]
        if bad and out.get("status") is None:
            i = max(bad, key=lambda j: dis[j] / tol[j])
            out.update(status="ill_conditioned", reason=(
                f"J·u from {method} differs from finite differences of the map by "
                f"{dis[i]:.3g} (tolerance {tol[i]:.3g}, |J·u| by differences {n_h[i]:.3g}) in "
                f"probe direction {i}: the method does not reproduce the map's derivative"))
    if out.get("status") is None:
        out.update(status="ok", reason=(
            f"differentiable at the probed scale: directional derivatives at steps {h:.2g} "
            f"and {10 * h:.2g} agree within {100 * rel.max():.2g} %"
            + ("" if apply_J is None else f", and {method}'s J·u matches them")))
    return out
