"""Fixed-point solvers for a map ``x ↦ G(x)``: damped Picard, Anderson acceleration and
Newton's method (for maps whose Jacobian can be formed).

All share one signature, ``solver(G, x0, *, tol, max_iter, ...)``, and return a
:class:`FixedPointSolution` with a status, the best (lowest-residual) iterate, the residual
trace and the number of map evaluations — the shape of torchdeq's and optimistix's solvers.
``G`` may be any callable on 1-D float arrays; :class:`stabfw.RetrainingMap`
builds one from a loop (generate → mix → fit with common random numbers).

References
----------
Walker & Ni, "Anderson acceleration for fixed-point iterations", SIAM J. Numer. Anal.
49(4), 2011. Anderson, "Iterative procedures for nonlinear integral equations", J. ACM
12(4), 1965. Kelley, *Iterative Methods for Linear and Nonlinear Equations*, SIAM 1995,
ch. 4 (damped fixed-point iteration), ch. 5 and 8 (Newton's method, Armijo line search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw.analysis.results import AnalysisResult

__all__ = ["SOLVERS", "FixedPointSolution", "anderson", "newton", "picard", "solve_fixed_point"]

Status = Literal["converged", "max_iter", "diverged"]


@dataclass(frozen=True)
class FixedPointSolution(AnalysisResult):
    """The result of a fixed-point solve.

    Attributes
    ----------
    fixed_point : numpy.ndarray
        The iterate with the lowest residual ‖G(x) − x‖ seen (not necessarily the last).
    status : {"converged", "max_iter", "diverged"}
    residuals : numpy.ndarray
        ‖G(x_k) − x_k‖ of every evaluated iterate, in order.
    n_evaluations : int
        Calls of ``G``.
    method : str
    residual : float
        The residual of ``fixed_point``.
    tol : float
        The absolute tolerance that was applied (``atol + rtol·‖x‖``).
    wall_time : float
        Seconds.
    local_rate : float
        |λ_max| of the map's Jacobian at ``fixed_point``, by power iteration on
        finite differences (NaN when not checked).
    stability : {"attracting", "repelling", "unknown"}
        ``attracting`` when ``local_rate`` < 1, ``repelling`` when > 1 — each only when the
        power iteration settled (last two estimates within 5 %) and |local_rate − 1| exceeds
        their spread; ``unknown`` otherwise. A "converged" solve at a repelling point is a
        fixed point the loop itself runs away from.
    """

    fixed_point: np.ndarray
    status: Status
    residuals: np.ndarray
    n_evaluations: int
    method: str
    residual: float
    tol: float
    wall_time: float
    info: dict[str, Any] = field(default_factory=dict)
    local_rate: float = math.nan
    stability: Literal["attracting", "repelling", "unknown"] = "unknown"

    @property
    def converged(self) -> bool:
        """Whether the residual fell below the tolerance."""
        return self.status == "converged"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the fixed point itself only when it is short)."""
        out = {
            "method": self.method,
            "status": self.status,
            "residual": self.residual,
            "tol": self.tol,
            "n_evaluations": int(self.n_evaluations),
            "wall_time": round(float(self.wall_time), 4),
            "residuals": self.residuals,
            "local_rate": self.local_rate,
            "stability": self.stability,
            **self.info,
        }
        if self.fixed_point.size <= 50:
            out["fixed_point"] = self.fixed_point
        return self._plain(out)


class _Tracker:
    """Counts evaluations and keeps the lowest-residual iterate."""

    def __init__(self, G: Callable[[np.ndarray], np.ndarray], atol: float, rtol: float):
        self.G, self.atol, self.rtol = G, atol, rtol
        self.n = 0
        self.residuals: list[float] = []
        self.best_x: np.ndarray | None = None
        self.best_f: np.ndarray | None = None
        self.best_r = math.inf

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        gx = np.asarray(self.G(x), dtype=float)
        self.n += 1
        if gx.shape != x.shape:
            raise ValueError(f"the map returned shape {gx.shape} for an input of shape {x.shape}")
        f = gx - x
        r = float(np.linalg.norm(f)) if np.all(np.isfinite(f)) else math.inf
        self.residuals.append(r)
        if r < self.best_r:
            self.best_r, self.best_x, self.best_f = r, x.copy(), f
        return gx, f, r

    def tol(self, x: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.linalg.norm(x))


def _finish(tr: _Tracker, x0: np.ndarray, status: Status, method: str, t0: float,
            **info: Any) -> FixedPointSolution:
    best = tr.best_x if tr.best_x is not None else x0.copy()
    return FixedPointSolution(best, status, np.asarray(tr.residuals), tr.n, method, tr.best_r,
                              tr.tol(best), time.perf_counter() - t0, info)


def _check(x0: Any, tol: float, max_iter: int) -> np.ndarray:
    x = np.array(x0, dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 must be finite")
    if tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
    return x


def picard(
    G: Callable[[np.ndarray], np.ndarray],
    x0: Any,
    *,
    tol: float = 1e-8,
    rtol: float = 0.0,
    max_iter: int = 1000,
    damping: float = 1.0,
    divergence: float = 1e8,
) -> FixedPointSolution:
    """Damped Picard iteration ``x ← (1 − β) x + β G(x)``.

    Parameters
    ----------
    G : callable
        The map, on 1-D float arrays.
    x0 : array_like
        Starting point.
    tol, rtol : float
        Stop when ‖G(x) − x‖ ≤ tol + rtol·‖x‖.
    max_iter : int
        Maximum number of map evaluations.
    damping : float
        β in (0, 1]; 1 is plain fixed-point iteration.
    divergence : float
        Give up (status ``"diverged"``) when the residual grows beyond this factor of the
        first residual, or becomes non-finite.

    Returns
    -------
    FixedPointSolution

    References
    ----------
    Kelley, *Iterative Methods for Linear and Nonlinear Equations*, SIAM 1995, ch. 4.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    t0 = time.perf_counter()
    x = _check(x0, tol, max_iter)
    tr = _Tracker(G, tol, rtol)
    r0 = None
    for _ in range(max_iter):
        _, f, r = tr(x)
        r0 = r if r0 is None else r0
        if r <= tr.tol(x):
            return _finish(tr, x, "converged", "picard", t0, damping=damping)
        if not math.isfinite(r) or r > divergence * max(r0, 1e-300):
            return _finish(tr, x, "diverged", "picard", t0, damping=damping)
        x = x + damping * f
    return _finish(tr, x, "max_iter", "picard", t0, damping=damping)


def anderson(
    G: Callable[[np.ndarray], np.ndarray],
    x0: Any,
    *,
    tol: float = 1e-8,
    rtol: float = 0.0,
    max_iter: int = 1000,
    memory: int = 5,
    damping: float = 1.0,
    regularization: float = 1e-10,
    divergence: float = 1e8,
) -> FixedPointSolution:
    """Anderson acceleration (type II) of the fixed-point iteration.

    With residuals ``f_k = G(x_k) − x_k`` and the last ``memory`` differences
    ``ΔF, ΔX``, the next iterate is ``x + βf − (ΔX + βΔF) γ`` where γ solves the
    (Tikhonov-regularised) least-squares problem ``min ‖f − ΔF γ‖``. The history is
    cleared, and a plain step taken from the best iterate so far, when a step increases
    the residual tenfold or ``2·memory + 2`` steps pass without a new best residual;
    each such stall also halves the memory (down to 0, Picard). These are safeguards for
    maps that are only locally contracting or only roughly linear.

    Parameters
    ----------
    G, x0, tol, rtol, max_iter, divergence
        As in :func:`picard`.
    memory : int
        Number of past differences kept (m in the literature); 0 is damped Picard.
    damping : float
        β in (0, 1].
    regularization : float
        Relative Tikhonov term of the least-squares problem.

    Returns
    -------
    FixedPointSolution

    References
    ----------
    Walker & Ni, SIAM J. Numer. Anal. 49(4):1715–1735, 2011.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if memory < 0:
        raise ValueError(f"memory must be ≥ 0, got {memory}")
    t0 = time.perf_counter()
    x = _check(x0, tol, max_iter)
    tr = _Tracker(G, tol, rtol)
    dX: list[np.ndarray] = []
    dF: list[np.ndarray] = []
    x_prev = f_prev = None
    r0 = r_prev = None
    restarts = stalled = 0
    # Anderson can wander without ever beating its best residual on a map that is only
    # roughly linear (seen: 180 iterations at 3e-2 where Picard converges in 55); each such
    # stall halves the memory, down to Picard, which a contraction cannot stall
    m_eff, patience = memory, 2 * memory + 2

    def finish(status: Status) -> FixedPointSolution:
        return _finish(tr, x, status, "anderson", t0, memory=memory, restarts=restarts,
                       memory_at_end=m_eff)

    for _ in range(max_iter):
        _, f, r = tr(x)
        r0 = r if r0 is None else r0
        if r <= tr.tol(x):
            return finish("converged")
        if not math.isfinite(r) or r > divergence * max(r0, 1e-300):
            return finish("diverged")
        stalled = 0 if r == tr.best_r else stalled + 1
        if dX and ((r_prev is not None and r > 10 * r_prev) or stalled > patience):
            # restart: forget the history, take a plain step from the best iterate so far
            if stalled > patience:
                m_eff //= 2
            dX.clear()
            dF.clear()
            restarts += 1
            stalled = 0
            x_prev, f_prev, r_prev = tr.best_x, tr.best_f, tr.best_r
            x = x_prev + damping * f_prev
            continue
        if x_prev is not None:
            dX.append(x - x_prev)
            dF.append(f - f_prev)
            while len(dX) > m_eff:
                dX.pop(0)
                dF.pop(0)
        x_prev, f_prev, r_prev = x, f, r
        if dX:
            Fm = np.stack(dF, axis=1)
            Xm = np.stack(dX, axis=1)
            gram = Fm.T @ Fm
            gram += regularization * max(np.trace(gram), 1e-300) * np.eye(gram.shape[0])
            gamma = np.linalg.solve(gram, Fm.T @ f)
            x = x + damping * f - (Xm + damping * Fm) @ gamma
        else:
            x = x + damping * f
    return finish("max_iter")


def newton(
    G: Callable[[np.ndarray], np.ndarray],
    x0: Any,
    *,
    jacobian: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tol: float = 1e-8,
    rtol: float = 0.0,
    max_iter: int = 1000,
    max_jacobians: int = 30,
    backtracks: int = 10,
    divergence: float = 1e8,
) -> FixedPointSolution:
    """Newton's method on ``F(x) = G(x) − x`` with an Armijo line search.

    The step solves ``(I − J) s = F(x)`` with ``J = jacobian(x, G(x))``; the largest of
    ``1, 1/2, 1/4, …`` (at most ``backtracks`` halvings) that lowers the residual by the
    Armijo factor ``1 − 10⁻⁴·α`` is taken. For a smooth map that contracts slowly, or not
    uniformly (a spectral radius near 1, a non-normal J), this converges in a few steps
    where Picard and Anderson take hundreds; each step costs one Jacobian and at least one
    map evaluation. It finds repelling fixed points as readily as attracting ones, and a
    map that is not smooth on the step's scale can leave every step rejected.

    Parameters
    ----------
    G, x0, tol, rtol, divergence
        As in :func:`picard`.
    jacobian : callable
        ``jacobian(x, gx)``: G's d×d Jacobian at ``x``, given ``gx = G(x)``.
    max_iter : int
        Maximum number of map evaluations.
    max_jacobians : int
        Maximum number of Jacobians (Newton steps).
    backtracks : int
        Halvings of a step before the solve stops (status ``"max_iter"``, with ``info``
        ``stopped`` saying why): no step along the Newton direction lowers the residual.

    Returns
    -------
    FixedPointSolution
        ``info`` adds ``jacobians``, ``jacobian_seconds`` and the accepted ``step_sizes``.

    References
    ----------
    Kelley, *Iterative Methods for Linear and Nonlinear Equations*, SIAM 1995, ch. 5, 8.
    """
    if backtracks < 0:
        raise ValueError(f"backtracks must be ≥ 0, got {backtracks}")
    if max_jacobians < 1:
        raise ValueError(f"max_jacobians must be ≥ 1, got {max_jacobians}")
    t0 = time.perf_counter()
    x = _check(x0, tol, max_iter)
    tr = _Tracker(G, tol, rtol)
    steps: list[float] = []
    n_jac, t_jac = 0, 0.0

    def finish(status: Status, stopped: str | None = None) -> FixedPointSolution:
        extra = {"stopped": stopped} if stopped else {}
        return _finish(tr, x, status, "newton", t0, jacobians=n_jac,
                       jacobian_seconds=round(t_jac, 3), step_sizes=steps, **extra)

    gx, f, r = tr(x)
    r0 = r
    while True:
        if r <= tr.tol(x):
            return finish("converged")
        if not math.isfinite(r) or r > divergence * max(r0, 1e-300):
            return finish("diverged")
        if tr.n >= max_iter or n_jac >= max_jacobians:
            return finish("max_iter")
        t1 = time.perf_counter()
        J = np.asarray(jacobian(x, gx), dtype=float)
        n_jac += 1
        t_jac += time.perf_counter() - t1
        if J.shape != (x.size, x.size):
            raise ValueError(f"the Jacobian has shape {J.shape}; expected {(x.size, x.size)}")
        A = np.eye(x.size) - J
        try:
            s = np.linalg.solve(A, f)
        except np.linalg.LinAlgError:  # I − J singular: the least-squares step
            s = np.linalg.lstsq(A, f, rcond=None)[0]
        alpha = 1.0
        for _ in range(backtracks + 1):
            if tr.n >= max_iter:
                return finish("max_iter")
            x_new = x + alpha * s
            gx_new, f_new, r_new = tr(x_new)
            if r_new <= (1.0 - 1e-4 * alpha) * r:
                break
            alpha /= 2
        else:
            return finish("max_iter", f"no step along the Newton direction lowered the "
                          f"residual {r:.3g} ({backtracks} halvings)")
        steps.append(alpha)
        x, gx, f, r = x_new, gx_new, f_new, r_new


SOLVERS: dict[str, Callable[..., FixedPointSolution]] = {"picard": picard, "anderson": anderson,
                                                         "newton": newton}


def local_rate(G: Callable[[np.ndarray], np.ndarray], x: Any, steps: int = 8,
               fd_step: float = 1e-5, seed: int = 0) -> tuple[float, float, int]:
    """|λ_max| of G's Jacobian at ``x`` by power iteration on forward differences.

    Returns ``(rate, spread, evaluations)``: the last estimate ‖J v_k‖ and its change from
    the one before (the iteration's own error indicator; not a statistical interval).
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    gx = np.asarray(G(x), dtype=float)
    h = fd_step * max(1.0, float(np.linalg.norm(x)))
    v = np.random.default_rng(seed).standard_normal(x.size)
    v /= np.linalg.norm(v)
    est: list[float] = []
    for _ in range(steps):
        jv = (np.asarray(G(x + h * v), dtype=float) - gx) / h
        r = float(np.linalg.norm(jv))
        if not math.isfinite(r):
            return math.nan, math.nan, len(est) + 1
        est.append(r)
        if r == 0.0:
            break
        v = jv / r
    spread = abs(est[-1] - est[-2]) if len(est) > 1 else math.inf
    return est[-1], spread, len(est) + 1


def solve_fixed_point(G: Callable[[np.ndarray], np.ndarray], x0: Any, method: str = "anderson",
                      check_stability: bool = True, power_steps: int = 8,
                      **options: Any) -> FixedPointSolution:
    """Find a fixed point of ``G`` from ``x0`` with ``method`` ("picard", "anderson" or
    "newton", which needs ``jacobian=``),
    and (``check_stability``) whether it attracts: ``local_rate`` and ``stability`` by
    ``power_steps`` finite-difference power iterations at the solution, or, for
    ``newton``, as ρ of the Jacobian there (``local_rate_spread`` 0: no iteration error)."""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {', '.join(SOLVERS)}; got {method!r}")
    sol = SOLVERS[method](G, x0, **options)
    if not check_stability or not np.all(np.isfinite(sol.fixed_point)):
        return sol
    if method == "newton":  # J is at hand: its spectral radius, not an unsettled estimate
        x = sol.fixed_point
        J = np.asarray(options["jacobian"](x, np.asarray(G(x), dtype=float)), dtype=float)
        rate = float(np.max(np.abs(np.linalg.eigvals(J)))) if np.all(np.isfinite(J)) else math.nan
        spread, n = 0.0, 1
    else:
        rate, spread, n = local_rate(G, sol.fixed_point, steps=power_steps)
    settled = math.isfinite(rate) and spread <= 0.05 * max(rate, 1e-12)
    stability = "unknown"
    if settled and abs(rate - 1.0) > spread:
        stability = "attracting" if rate < 1 else "repelling"
    info = {**sol.info, "local_rate_spread": spread, "local_rate_evaluations": n}
    return FixedPointSolution(sol.fixed_point, sol.status, sol.residuals, sol.n_evaluations + n,
                              sol.method, sol.residual, sol.tol, sol.wall_time, info, rate,
                              stability)
