"""The one operator interface every Jacobian method returns: ``v ↦ J v`` at a point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stabfw.analysis.spectra import CountingOperator

__all__ = ["JacobianOperator", "Linearization"]


class JacobianOperator(CountingOperator):
    """``v ↦ J v`` (and ``Jᵀ u`` where the method has it) at a point, with where it was
    built and what it cost.

    Attributes
    ----------
    method : str
    point : numpy.ndarray
        Where J is evaluated (the generating model's θ).
    theta_star : numpy.ndarray
    residual : float
        ‖G(point) − point‖.
    at : str
        ``"theta_star"``, ``"fixed_point"`` or ``"given"``.
    retraining_map : RetrainingMap
    info : dict
        Method diagnostics (CG iterations, Newton polish, fit residual, ...).
    ritz_values : numpy.ndarray or None
        ``empirical`` on a subspace smaller than θ: the eigenvalues of J restricted to it
        (the matrix is zero on the complement, so its own eigenvalues say nothing there).
    subspace : numpy.ndarray or None
        An orthonormal basis (d × r) of that subspace.
    image : numpy.ndarray or None
        ``G(point)``.
    """

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], dim: int,
                 rmatvec: Callable[[np.ndarray], np.ndarray] | None = None,
                 matrix: np.ndarray | None = None, *, method: str, point: np.ndarray,
                 theta_star: np.ndarray, residual: float, at: str, retraining_map: Any,
                 info: dict[str, Any] | None = None,
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 ritz_values: np.ndarray | None = None, subspace: np.ndarray | None = None,
                 image: np.ndarray | None = None):
        super().__init__(matvec, dim, rmatvec, matrix)
        self.subspace, self.image = subspace, image
        self.method, self.point, self.theta_star = method, point, theta_star
        self.residual, self.at, self.retraining_map = residual, at, retraining_map
        self.info: dict[str, Any] = dict(info or {})
        self.ritz_values = ritz_values
        self._diagnostics = diagnostics

    def diagnostics(self) -> dict[str, Any]:
        """``info`` plus what the applications so far cost (e.g. CG iterations)."""
        out = dict(self.info)
        if self._diagnostics is not None:
            out.update(self._diagnostics())
        return out


@dataclass
class Linearization:
    """Where a Jacobian method linearises the retraining map: what every method gets.

    Attributes
    ----------
    loop : SelfConsumingLoop
    G : RetrainingMap
    point : numpy.ndarray
        The generating θ at which J is built.
    image : numpy.ndarray
        ``G(point)``, the fitted θ there.
    at : str
        ``"theta_star"``, ``"fixed_point"`` or ``"given"``.
    random_state : int
        Seed of random directions.
    info : dict
        What finding the point recorded (a fixed-point solve).
    """

    loop: Any
    G: Any
    point: np.ndarray
    image: np.ndarray
    at: str
    random_state: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def residual(self) -> float:
        """‖G(point) − point‖."""
        return float(np.linalg.norm(self.image - self.point))

    def operator(self, method: str, matvec: Callable[[np.ndarray], np.ndarray],
                 rmatvec: Callable[[np.ndarray], np.ndarray] | None = None,
                 matrix: np.ndarray | None = None, *, info: dict[str, Any] | None = None,
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 ritz_values: np.ndarray | None = None,
                 subspace: np.ndarray | None = None) -> JacobianOperator:
        """The :class:`JacobianOperator` of ``method`` at this point."""
        return JacobianOperator(
            matvec, self.point.size, rmatvec, matrix, method=method, point=self.point,
            theta_star=self.G.theta_star, residual=self.residual, at=self.at,
            retraining_map=self.G, info={**self.info, **(info or {})},
            diagnostics=diagnostics, ritz_values=ritz_values, subspace=subspace,
            image=self.image)
