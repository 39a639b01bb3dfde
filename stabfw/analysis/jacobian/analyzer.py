"""The Jacobian analyzer: local stability of the retraining map at θ* (or its fixed point).

``J = ∂G_λ/∂θ`` where ``G_λ`` is one generation of the loop (:class:`~stabfw.RetrainingMap`:
generate with the given θ, mix with the real data, refit — with common random numbers).
The loop is locally stable where the spectral radius ρ(J) < 1. Four methods, one module
each, all behind one operator interface (:class:`~stabfw.analysis.jacobian.operator.
JacobianOperator`, ``v ↦ J v``): ``dense`` (autodiff, the test oracle), ``implicit`` (the
implicit function theorem with conjugate gradients), ``finite_difference`` (differences of
the black-box map) and ``empirical`` (system identification). Each method's options are a
pydantic model (:data:`stabfw.run.analysis_config.METHOD_OPTIONS`), so a typo or a wrong
type is refused before any work.

The operator can be built at θ* (default), at the fixed point the loop actually has
(``at="fixed_point"``, found by :func:`~stabfw.analysis.fixed_point.solve_from_theta_star`)
or at any given θ. θ* is a fixed point of every maximum-likelihood loop with infinite
samples, but not of loops with selection or feedback, nor exactly of a finite-sample map:
the result reports ``residual = ‖G(θ) − θ‖``.

References
----------
Bertrand et al., "On the Stability of Iterative Retraining of Generative Models on their
own Data", ICLR 2024 (J at θ*, Theorem 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw.analysis.bounds import estimate_constants, theorem1_report
from stabfw.analysis.fixed_point import solve_from_theta_star
from stabfw.analysis.jacobian import dense, empirical, finite_difference, implicit
from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization
from stabfw.analysis.results import AnalysisResult
from stabfw.analysis.solvers import FixedPointSolution
from stabfw.analysis.spectra import Spectrum, spectrum
from stabfw.core.differentiable import require_differentiable
from stabfw.run.analysis_config import (
    JACOBIAN_METHODS,
    METHOD_OPTIONS,
    SolveOptions,
    method_options,
)
from stabfw.run.retraining_map import RetrainingMap

__all__ = ["METHODS", "JacobianAnalyzer", "JacobianResult"]

METHODS = JACOBIAN_METHODS
Method = Literal["auto", "dense", "implicit", "finite_difference", "empirical"]
_BUILDERS = {"dense": dense.build, "implicit": implicit.build,
             "finite_difference": finite_difference.build, "empirical": empirical.build}


@dataclass(frozen=True)
class JacobianResult(AnalysisResult):
    """Spectrum of the retraining map's Jacobian, and how it was obtained.

    Attributes
    ----------
    method : str
        ``dense``, ``implicit``, ``finite_difference`` or ``empirical``.
    spectral_radius, spectral_norm : float
    eigenvalues : numpy.ndarray of complex
        Leading eigenvalues by decreasing modulus.
    n_matvecs : int
        Applications of J (for ``empirical``: perturbed map evaluations).
    n_evaluations : int
        Evaluations of the retraining map (refits), all included: finding the point, its
        residual, the differences.
    wall_time : float
        Seconds, all included.
    spectrum_method : str
    at : str
    point, theta_star : numpy.ndarray
    residual : float
        ‖G(point) − point‖ (0 only at a fixed point of the finite-sample map).
    lam : float
    matrix : numpy.ndarray or None
        The dense J when it was formed.
    bounds : dict or None
        Theorem 1 beside the measured ρ (:func:`stabfw.analysis.bounds.theorem1_report`).
    info : dict
    status : str
        ``"ok"``.
    """

    method: str
    spectral_radius: float
    spectral_norm: float
    eigenvalues: np.ndarray
    n_matvecs: int
    n_evaluations: int
    wall_time: float
    spectrum_method: str
    at: str
    point: np.ndarray
    theta_star: np.ndarray
    residual: float
    lam: float
    matrix: np.ndarray | None = None
    bounds: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"

    @property
    def n_map_evaluations(self) -> int:
        """Alias of :attr:`n_evaluations`."""
        return self.n_evaluations

    @property
    def dim(self) -> int:
        """Length of θ."""
        return int(self.point.size)

    @property
    def stable(self) -> bool:
        """ρ(J) < 1."""
        return bool(self.spectral_radius < 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays longer than the leading eigenvalues)."""
        info = {k: (v if not isinstance(v, np.ndarray) or v.size <= 64 else f"array{v.shape}")
                for k, v in self.info.items()}
        return self._plain({
            "method": self.method,
            "status": self.status,
            "spectral_radius": self.spectral_radius,
            "spectral_norm": self.spectral_norm,
            "eigenvalues": np.asarray(self.eigenvalues, complex),
            "stable": self.stable,
            "n_matvecs": int(self.n_matvecs),
            "n_evaluations": int(self.n_evaluations),
            "wall_time": round(float(self.wall_time), 4),
            "spectrum_method": self.spectrum_method,
            "at": self.at,
            "dim": self.dim,
            "lam": self.lam,
            "residual": self.residual,
            "residual_relative": self.residual / max(np.linalg.norm(self.point), 1e-300),
            "distance_to_theta_star": float(np.linalg.norm(self.point - self.theta_star)),
            "bounds": self.bounds,
            "info": info,
        })


class JacobianAnalyzer:
    """Spectrum of ``J = ∂G_λ/∂θ`` for a loop, by one of four methods.

    Parameters
    ----------
    method : {"auto", "dense", "implicit", "finite_difference", "empirical"}
        ``auto``: ``implicit`` for differentiable domains without curate/correct hooks,
        ``finite_difference`` otherwise.
    spectrum : {"auto", "dense", "power", "arnoldi"}
        How to get eigenvalues from the operator (``auto``: the matrix when the method
        formed it or d ≤ 40, Arnoldi above).
    k : int
        Leading eigenvalues to report.
    tol : float
        Relative accuracy of the iterative spectra.
    seed : int, optional
        The replicate whose streams define the map (default: the config's first seed).
    bounds : {"auto", True, False}
        Estimate α, L, ε and report Theorem 1 beside ρ (``auto``: for differentiable
        domains with finite λ).
    norm : bool
        Also compute the spectral norm (Lanczos on JᵀJ: about as many applications of J
        and Jᵀ again as the eigenvalues took; free when J is formed).
    solve : SolveOptions or dict, optional
        How ``at="fixed_point"`` finds the fixed point.
    random_state : int
        Perturbation directions and iterative start vectors.
    options : dict or options model, optional
        The method's options (:class:`~stabfw.run.analysis_config.DenseOptions`,
        ``ImplicitOptions``, ``FiniteDifferenceOptions``, ``EmpiricalOptions``).
    **method_kwargs
        The same options as keywords (``fd_step=1e-3``, ``cg_tol=...``); also the older
        ``solver=`` / ``solver_options=`` for ``solve``.
    """

    def __init__(self, method: Method = "auto", spectrum: str = "auto", k: int = 6,
                 tol: float = 1e-3, seed: int | None = None, bounds: Any = "auto",
                 norm: bool = True, solve: SolveOptions | dict[str, Any] | None = None,
                 random_state: int = 0, options: Any = None, **method_kwargs: Any):
        if method not in ("auto", *METHODS):
            raise ValueError(f"method must be one of auto, {', '.join(METHODS)}; got {method!r}")
        if spectrum not in ("auto", "dense", "power", "arnoldi"):
            raise ValueError(f"spectrum must be auto, dense, power or arnoldi; got {spectrum!r}")
        self.method = method
        self.spectrum = spectrum
        self.k = k
        self.tol = tol
        self.seed = seed
        self.bounds = bounds
        self.norm = norm
        self.random_state = random_state
        solver = method_kwargs.pop("solver", None)
        solver_options = method_kwargs.pop("solver_options", None)
        if solve is None and (solver or solver_options):
            solve = {**({"method": solver} if solver else {}), **(solver_options or {})}
        self.solve = solve if isinstance(solve, SolveOptions) or solve is None \
            else SolveOptions.model_validate(solve)
        if options is not None and not isinstance(options, dict):
            options = options.model_dump()
        self.options = {**(options or {}), **method_kwargs}
        # validated now, against the method (or every method for "auto")
        self._options = method_options([method], self.options, "JacobianAnalyzer")

    def method_options(self, method: str):
        """The validated options model of ``method``."""
        return self._options.get(method) or METHOD_OPTIONS[method].model_validate(
            {k: v for k, v in self.options.items() if k in METHOD_OPTIONS[method].model_fields})

    # --- validation -----------------------------------------------------------------------
    def _resolve_method(self, loop: Any, G: RetrainingMap) -> str:
        G.require_autonomous("JacobianAnalyzer")
        method = self.method
        caps = loop.capabilities()
        if method == "auto":
            method = "implicit" if (caps.differentiable and not G.has_hooks) \
                else "finite_difference"
        if method in ("dense", "implicit"):
            require_differentiable(loop, method)
            if G.has_hooks:
                raise ValueError(f"method={method!r} cannot differentiate through curate/correct "
                                 "hooks; use 'finite_difference' or 'empirical'")
        return method

    def _point(self, G: RetrainingMap, at: Any) -> tuple[np.ndarray, str, dict[str, Any]]:
        if isinstance(at, FixedPointSolution):  # a fixed point found already
            return np.asarray(at.fixed_point, float), "fixed_point", {
                "solve": at.to_dict() | {"fixed_point": None}}
        if at is None or (isinstance(at, str) and at == "theta_star"):
            return G.theta_star, "theta_star", {}
        if isinstance(at, str):
            if at != "fixed_point":
                raise ValueError(f"at must be None, 'theta_star', 'fixed_point' or an array; "
                                 f"got {at!r}")
            sol = solve_from_theta_star(G, self.solve)
            return sol.fixed_point, "fixed_point", {"solve": sol.to_dict() | {"fixed_point": None}}
        x = np.asarray(at, dtype=float).reshape(-1)
        if x.shape != G.theta_star.shape:
            raise ValueError(f"at has length {x.size}; θ has {G.theta_star.size}")
        return x, "given", {}

    # --- operators ----------------------------------------------------------------------------
    def operator(self, loop: Any, config: Any, at: Any = None,
                 retraining_map: RetrainingMap | None = None) -> JacobianOperator:
        """The matrix-free operator ``v ↦ J v`` (``dense``/``empirical``: a formed matrix)."""
        G = retraining_map if retraining_map is not None else RetrainingMap(loop, config,
                                                                               seed=self.seed)
        return self._build(loop, G, self._resolve_method(loop, G), at)

    def _build(self, loop: Any, G: RetrainingMap, method: str, at: Any) -> JacobianOperator:
        x, at_label, info = self._point(G, at)
        lin = Linearization(loop, G, x, G(x), at_label, self.random_state, info)
        return _BUILDERS[method](lin, self.method_options(method))

    # --- analysis ---------------------------------------------------------------------------
    def analyze(self, loop: Any, config: Any, at: Any = None,
                retraining_map: RetrainingMap | None = None) -> JacobianResult:
        """Build J at ``at`` (θ* by default) and compute its spectrum.

        Parameters
        ----------
        loop : SelfConsumingLoop
        config : RetrainConfig or dict
        at : None, "theta_star", "fixed_point", array or FixedPointSolution
            Where to build J: θ* (default), the fixed point of the map (solved here, or
            the one a :class:`~stabfw.FixedPointSolution` holds) or any θ.
        retraining_map : RetrainingMap, optional
            A map of ``loop`` and ``config`` built already (saves refitting θ*, e.g. over a
            grid of λ with :meth:`RetrainingMap.with_lam`).
        """
        t0 = time.perf_counter()
        G = retraining_map if retraining_map is not None else RetrainingMap(loop, config,
                                                                               seed=self.seed)
        method = self._resolve_method(loop, G)
        op = self._build(loop, G, method, at)
        if method == "empirical":
            spec = _matrix_spectrum(op, self.k)
            n_mv = op.info["n_perturbed_evaluations"]
        else:
            # auto: dense while forming J (d applications) is no dearer than Arnoldi's ~2·ncv
            extra = {} if self.norm or self.spectrum == "dense" else {"norm": False}
            spec = spectrum(op, method=self.spectrum, k=self.k, tol=self.tol,
                            max_dense_dim=min(self.method_options("dense").max_dense_dim, 40),
                            **extra)
            n_mv = op.n_matvecs
        info = op.diagnostics()
        info["spectrum_note"] = spec.note
        info["spectrum_converged"] = spec.converged
        bounds = self._bounds(loop, G, spec.spectral_radius)
        return JacobianResult(
            method=method, spectral_radius=float(spec.spectral_radius),
            spectral_norm=float(spec.spectral_norm), eigenvalues=np.asarray(spec.eigenvalues),
            n_matvecs=int(n_mv), n_evaluations=int(G.n_evaluations),
            wall_time=time.perf_counter() - t0, spectrum_method=spec.method, at=op.at,
            point=op.point, theta_star=op.theta_star, residual=op.residual,
            lam=float(G.config.lam), matrix=op.matrix, bounds=bounds, info=info)

    def _bounds(self, loop: Any, G: RetrainingMap, rho: float) -> dict[str, Any] | None:
        want = self.bounds
        differentiable = loop.capabilities().differentiable
        if want is False or (want == "auto" and not differentiable):
            return None if want is False else {
                "note": "α, L, ε need a differentiable domain (loss/sample/draw_noise)"}
        if not differentiable:
            raise TypeError("bounds=True needs a differentiable domain")
        lam = float(G.config.lam)
        if not math.isfinite(lam):
            return {"note": "Theorem 1 needs a finite λ", "vacuous": True}
        t0 = time.perf_counter()
        c = estimate_constants(loop, G.theta_star, G.real0, seed=self.random_state)
        rep = theorem1_report(lam, c["alpha"], c["L"], c["eps"], rho)
        rep["wall_time"] = round(time.perf_counter() - t0, 3)
        return rep


def _matrix_spectrum(op: JacobianOperator, k: int) -> Spectrum:
    """The spectrum of an identified J (Ritz values where it was identified on a subspace)."""
    t0 = time.perf_counter()
    J = op.matrix
    if op.ritz_values is None:
        ev, note = np.linalg.eigvals(J), ""
    else:
        ev = np.asarray(op.ritz_values)
        note = (f"J identified on a {op.info['rank']}-dimensional subspace only: leading "
                "eigenvalues are Ritz values, the norm a lower bound")
    order = np.lexsort((-ev.imag, -np.abs(ev)))
    ev = ev[order]
    return Spectrum(float(np.max(np.abs(ev))), float(np.linalg.norm(J, 2)), ev[:k], "empirical",
                    0, 0, time.perf_counter() - t0, True, note)
