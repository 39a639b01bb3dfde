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
from stabfw.analysis.jacobian.checks import check_map, probe_directions
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

__all__ = ["METHODS", "JacobianAnalyzer", "JacobianResult", "solve_map"]

METHODS = JACOBIAN_METHODS
#: Where J can be taken, by name.
AT_CHOICES = ("theta_star", "fixed_point", "auto")
#: Replicates ``at="auto"`` looks at (more are built when fewer seeds are measured).
AUTO_MIN_SEEDS = 3
Method = Literal["auto", "dense", "implicit", "finite_difference", "empirical"]
_BUILDERS = {"dense": dense.build, "implicit": implicit.build,
             "finite_difference": finite_difference.build, "empirical": empirical.build}


@dataclass(frozen=True)
class JacobianResult(AnalysisResult):
    """Spectrum of the retraining map's Jacobian over one or more seeds, how it was
    obtained, and whether it may be read as evidence about stability.

    Attributes
    ----------
    method : str
        ``dense``, ``implicit``, ``finite_difference`` or ``empirical``.
    spectral_radius : float
        ρ(J): the mean over :attr:`seeds` of each seed's ρ.
    spectral_norm : float
        ‖J‖₂, mean over seeds (NaN where the operator has no Jᵀ).
    eigenvalues : numpy.ndarray of complex
        Leading eigenvalues by decreasing modulus: the mean over seeds of each seed's
        sorted list (seed 0's with one seed).
    n_matvecs : int
        Applications of J over all seeds (for ``empirical``: perturbed map evaluations).
    n_evaluations : int
        Evaluations of the retraining map (refits), all included: finding the points,
        the differences, the differentiability checks.
    wall_time : float
        Seconds, all included (also :attr:`seconds`).
    spectrum_method : str
    at : str
        Where J was taken: ``theta_star``, ``fixed_point`` (each seed's own fixed point
        of the map) or ``given``.
    point, theta_star : numpy.ndarray
        First seed's point and θ*.
    residual : float
        ‖G(point) − point‖ of the first seed (0 only at a fixed point of the map).
    lam : float
    matrix : numpy.ndarray or None
        The first seed's dense J when it was formed.
    bounds : dict or None
        Theorem 1 beside the measured ρ (:func:`stabfw.analysis.bounds.theorem1_report`).
    info : dict
    status : {"ok", "not_differentiable", "ill_conditioned"}
        Whether ρ is evidence about stability (:mod:`stabfw.analysis.jacobian.checks`);
        anything but ``ok`` counts as no evidence (λ*, the headline, the figures).
    status_reason : str
        The sentence that says why.
    spectral_radius_ci : (float, float) or None
        t-interval of the mean ρ over seeds at :attr:`confidence` (None with one seed).
    spectral_radius_se : float or None
        Standard error of the mean ρ (sd over seeds / √k; None with one seed).
    spectral_radii : tuple of float
        Each seed's ρ.
    eigenvalues_sd : numpy.ndarray or None
        Spread of each leading eigenvalue across seeds (√ of the mean squared complex
        deviation, ddof 1; None with one seed).
    seeds : tuple of int
        The replicates measured.
    confidence : float
    n_applications : int
        Operator applications, all seeds and checks included (the cost unit of the
        iterative spectra).
    at_reason : str
        Why ``at`` is where it is (``at="auto"``).
    checks : dict
        The differentiability and agreement checks (:func:`~stabfw.analysis.jacobian.
        checks.check_map`) on the first seed.
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
    status_reason: str = ""
    spectral_radius_ci: tuple[float, float] | None = None
    spectral_radius_se: float | None = None
    spectral_radii: tuple[float, ...] = ()
    eigenvalues_sd: np.ndarray | None = None
    seeds: tuple[int, ...] = ()
    confidence: float = 0.9
    n_applications: int = 0
    at_reason: str = ""
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def n_map_evaluations(self) -> int:
        """Alias of :attr:`n_evaluations`."""
        return self.n_evaluations

    @property
    def seconds(self) -> float:
        """Alias of :attr:`wall_time`."""
        return self.wall_time

    @property
    def dim(self) -> int:
        """Length of θ."""
        return int(self.point.size)

    @property
    def evidence(self) -> bool:
        """Whether ρ may be read as evidence about stability (``status == "ok"``)."""
        return self.status == "ok"

    @property
    def stable(self) -> bool | None:
        """ρ(J) < 1; None when the status says ρ is no evidence."""
        return bool(self.spectral_radius < 1) if self.evidence else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays longer than the leading eigenvalues)."""
        info = {k: (v if not isinstance(v, np.ndarray) or v.size <= 64 else f"array{v.shape}")
                for k, v in self.info.items()}
        return self._plain({
            "method": self.method,
            "status": self.status,
            "status_reason": self.status_reason,
            "spectral_radius": self.spectral_radius,
            "spectral_radius_ci": (None if self.spectral_radius_ci is None
                                   else list(self.spectral_radius_ci)),
            "spectral_radius_se": self.spectral_radius_se,
            "spectral_radii": list(self.spectral_radii),
            "confidence": self.confidence,
            "seeds": list(self.seeds),
            "spectral_norm": self.spectral_norm,
            "eigenvalues": np.asarray(self.eigenvalues, complex),
            "eigenvalues_sd": (None if self.eigenvalues_sd is None
                               else np.asarray(self.eigenvalues_sd, float)),
            "stable": self.stable,
            "n_matvecs": int(self.n_matvecs),
            "n_applications": int(self.n_applications),
            "n_evaluations": int(self.n_evaluations),
            "wall_time": round(float(self.wall_time), 4),
            "seconds": round(float(self.wall_time), 4),
            "spectrum_method": self.spectrum_method,
            "at": self.at,
            "at_reason": self.at_reason,
            "dim": self.dim,
            "lam": self.lam,
            "residual": self.residual,
            "residual_relative": self.residual / max(np.linalg.norm(self.point), 1e-300),
            "distance_to_theta_star": float(np.linalg.norm(self.point - self.theta_star)),
            "checks": self.checks,
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
    seeds : int or sequence of int
        Replicates measured: ``k`` means the config's first ``k`` seeds (0..k−1 where the
        config has fewer), each with its own retraining map (own real data, θ* and
        draws). ρ is their mean, with a t-interval at ``confidence`` when k ≥ 2.
    confidence : float
        Level of :attr:`JacobianResult.spectral_radius_ci`.
    check : bool
        Probe the map by finite differences at two steps (and compare the method's J
        with them) before any stability claim; see :mod:`~stabfw.analysis.jacobian.checks`.
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
                 random_state: int = 0, options: Any = None, seeds: Any = 1,
                 confidence: float = 0.9, check: bool = True, **method_kwargs: Any):
        if method not in ("auto", *METHODS):
            raise ValueError(f"method must be one of auto, {', '.join(METHODS)}; got {method!r}")
        if spectrum not in ("auto", "dense", "power", "arnoldi"):
            raise ValueError(f"spectrum must be auto, dense, power or arnoldi; got {spectrum!r}")
        if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ValueError(f"seeds must be ≥ 1 (replicates), got {seeds}")
            seeds = int(seeds)
        else:
            try:
                seeds = [int(s) for s in seeds]
            except TypeError:
                raise ValueError(f"seeds must be an int ≥ 1 or a list of seed ids; got "
                                 f"{seeds!r}") from None
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be a non-empty list of distinct ids; got {seeds}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        self.method = method
        self.spectrum = spectrum
        self.seeds = seeds
        self.confidence = float(confidence)
        self.check = bool(check)
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

    def seed_ids(self, G: RetrainingMap) -> list[int]:
        """The replicates measured: ``G``'s seed first, then the config's next seeds."""
        if isinstance(self.seeds, list):
            return list(self.seeds)
        k = self.seeds
        pool = [int(s) for s in G.config.seed_list]
        if len(pool) < k:
            pool = pool + [s for s in range(k + len(pool)) if s not in pool]
        return [G.seed, *[s for s in pool if s != G.seed][:k - 1]]

    @staticmethod
    def _check_at(at: Any) -> None:
        if isinstance(at, str) and at not in AT_CHOICES:
            raise ValueError(f"at must be None, {', '.join(repr(a) for a in AT_CHOICES)}, an "
                             f"array or a FixedPointSolution; got {at!r}")

    def _point(self, G: RetrainingMap, at: Any) -> tuple[np.ndarray, str, dict[str, Any]]:
        if isinstance(at, FixedPointSolution):  # a fixed point found already
            if at.info.get("seed", G.seed) == G.seed:
                return np.asarray(at.fixed_point, float), "fixed_point", {
                    "solve": at.to_dict() | {"fixed_point": None}}
            at = "fixed_point"  # another seed's point: solve this seed's own
        if at is None or (isinstance(at, str) and at == "theta_star"):
            return G.theta_star, "theta_star", {}
        if isinstance(at, str):
            self._check_at(at)
            sol = solve_map(G, self.solve)
            return sol.fixed_point, "fixed_point", {"solve": sol.to_dict() | {"fixed_point": None}}
        x = np.asarray(at, dtype=float).reshape(-1)
        if x.shape != G.theta_star.shape:
            raise ValueError(f"at has length {x.size}; θ has {G.theta_star.size}")
        return x, "given", {}

    def choose_point(self, maps: list[RetrainingMap]) -> tuple[str, str, dict[int, np.ndarray]]:
        """``at="auto"``: θ* where it is a fixed point up to the map's noise, else the
        loop's fixed point.

        Over the replicates ``maps`` (at least :data:`AUTO_MIN_SEEDS`), the residuals
        ``r_s = G_s(θ*_s) − θ*_s`` have mean zero when θ* is a fixed point of the
        expected map (plain maximum likelihood on fixed real data: only the synthetic
        draws move it). The statistic ``F = m‖r̄‖² / tr S`` (S the residuals' sample
        covariance) is ≈ 1 then, F-distributed with the Satterthwaite effective dimension
        ``d_e = (tr S)²/tr S²``; above its 99 % quantile θ* is not a fixed point (a
        penalty, selection or feedback shifts the loop), and J is taken at each seed's
        fixed point.

        Returns ``(at, reason, images)`` — ``images`` the G(θ*) computed, by seed.
        """
        from scipy import stats

        images = {G.seed: G(G.theta_star) for G in maps}
        r = np.stack([images[G.seed] - G.theta_star for G in maps])
        m = r.shape[0]
        if not np.any(r):
            return "theta_star", "G(θ*) = θ* exactly: θ* is a fixed point", images
        rbar = r.mean(axis=0)
        S = np.cov(r, rowvar=False, ddof=1).reshape(r.shape[1], r.shape[1])
        trS = float(np.trace(S))
        if trS <= 0:
            return "fixed_point", ("every seed's θ* moves by the same amount: θ* is not a "
                                   "fixed point"), images
        F = m * float(rbar @ rbar) / trS
        de = trS**2 / max(float(np.sum(S * S)), 1e-300)
        thr = float(stats.f.ppf(0.99, de, de * (m - 1)))
        mean_res = float(np.mean(np.linalg.norm(r, axis=1)))
        if F <= thr:
            return "theta_star", (
                f"θ* is a fixed point up to the map's noise: over {m} seeds the mean residual "
                f"G(θ*) − θ* is within its spread (F = {F:.3g} ≤ {thr:.3g}, the 99 % quantile; "
                f"mean ‖G(θ*) − θ*‖ = {mean_res:.3g})"), images
        return "fixed_point", (
            f"θ* is not a fixed point: over {m} seeds G(θ*) − θ* has a systematic part beyond "
            f"the map's noise (F = {F:.3g} > {thr:.3g}, the 99 % quantile; mean ‖G(θ*) − θ*‖ "
            f"= {mean_res:.3g}), so J is taken at each seed's fixed point of the map"), images

    # --- operators ----------------------------------------------------------------------------
    def operator(self, loop: Any, config: Any, at: Any = None,
                 retraining_map: RetrainingMap | None = None) -> JacobianOperator:
        """The matrix-free operator ``v ↦ J v`` (``dense``/``empirical``: a formed matrix)
        of the first seed."""
        G = retraining_map if retraining_map is not None else RetrainingMap(loop, config,
                                                                               seed=self.seed)
        if isinstance(at, str) and at == "auto":
            at, _, _ = self.choose_point(self._maps(loop, G, {}, max(AUTO_MIN_SEEDS, 1)))
        return self._build(loop, G, self._resolve_method(loop, G), at)

    def _build(self, loop: Any, G: RetrainingMap, method: str, at: Any,
               image: np.ndarray | None = None) -> JacobianOperator:
        x, at_label, info = self._point(G, at)
        gx = image if (image is not None and at_label == "theta_star") else G(x)
        lin = Linearization(loop, G, x, gx, at_label, self.random_state, info)
        return _BUILDERS[method](lin, self.method_options(method))

    def _maps(self, loop: Any, G: RetrainingMap, maps: dict[int, RetrainingMap],
              n: int) -> list[RetrainingMap]:
        """The first ``n`` replicates' maps at G's λ (reusing ``maps``' θ* fits)."""
        ids = self.seed_ids(G)
        extra = [s for s in range(len(ids) + n) if s not in ids]
        ids = (ids + extra)[:max(n, len(ids))] if n > len(ids) else ids[:n]
        out = []
        for s in ids:
            if s == G.seed:
                out.append(G)
                continue
            base = maps.get(s)
            if base is None:
                base = maps[s] = RetrainingMap(loop, G.config, seed=s, generation=G.generation)
            out.append(base.with_lam(G.config.lam))
        return out

    # --- analysis ---------------------------------------------------------------------------
    def analyze(self, loop: Any, config: Any, at: Any = None,
                retraining_map: RetrainingMap | None = None,
                maps: dict[int, RetrainingMap] | None = None) -> JacobianResult:
        """Build J at ``at`` for each seed, take its spectrum, check the map.

        Parameters
        ----------
        loop : SelfConsumingLoop
        config : RetrainConfig or dict
        at : None, "theta_star", "fixed_point", "auto", array or FixedPointSolution
            Where to build J: θ* (default), each seed's fixed point of the map (solved
            here; a :class:`~stabfw.FixedPointSolution` is used for its own seed),
            ``auto`` (θ* where it is a fixed point up to noise, else the fixed point:
            :meth:`choose_point`) or a given θ.
        retraining_map : RetrainingMap, optional
            The first seed's map, built already (saves refitting θ*, e.g. over a grid of
            λ with :meth:`RetrainingMap.with_lam`).
        maps : dict of int to RetrainingMap, optional
            Maps of other seeds to reuse (same loop and config; another λ is fine); maps
            built here are added to it.
        """
        t0 = time.perf_counter()
        self._check_at(at)
        G0 = retraining_map if retraining_map is not None else RetrainingMap(loop, config,
                                                                                seed=self.seed)
        method = self._resolve_method(loop, G0)
        maps = {} if maps is None else maps
        seeds = self.seed_ids(G0)
        images: dict[int, np.ndarray] = {}
        at_reason = ""
        if isinstance(at, str) and at == "auto":
            probe = self._maps(loop, G0, maps, max(len(seeds), AUTO_MIN_SEEDS))
            at, at_reason, images = self.choose_point(probe)
            Gs = probe[:len(seeds)]
        else:
            Gs = self._maps(loop, G0, maps, len(seeds))
        per_seed, specs, ops = [], [], []
        n_apps = 0
        for G in Gs:
            op = self._build(loop, G, method, at, images.get(G.seed))
            if method == "empirical":
                spec = _matrix_spectrum(op, self.k)
                n_mv = op.info["n_perturbed_evaluations"]
            else:
                # auto: form J only where that is cheaper than Arnoldi's Krylov basis
                # (d ≤ max(2k + 1, 20) applications); matrix-free otherwise
                cheaper = max(2 * self.k + 1, 20)
                extra = {} if self.norm or self.spectrum == "dense" else {"norm": False}
                spec = spectrum(op, method=self.spectrum, k=self.k, tol=self.tol,
                                max_dense_dim=min(self.method_options("dense").max_dense_dim,
                                                  cheaper), **extra)
                n_mv = op.n_matvecs
            n_apps += int(n_mv)
            specs.append(spec)
            ops.append(op)
            per_seed.append({"seed": G.seed, "spectral_radius": float(spec.spectral_radius),
                             "residual": op.residual, "at": op.at,
                             "spectrum_converged": spec.converged})
        op, spec, G = ops[0], specs[0], Gs[0]
        checks = self._checks(G, op, method) if self.check else {
            "status": "ok", "reason": "checks skipped (check=False)", "n_evaluations": 0}
        n_apps += int(checks.get("n_applications", 0))
        rhos = np.array([s.spectral_radius for s in specs], float)
        k = rhos.size
        rho, ci, se = float(np.mean(rhos)), None, None
        if k >= 2:
            from scipy import stats

            se = float(np.std(rhos, ddof=1) / math.sqrt(k))
            half = float(stats.t.ppf(0.5 + self.confidence / 2, k - 1)) * se
            ci = (rho - half, rho + half)
        eig, eig_sd = _mean_eigenvalues([s.eigenvalues for s in specs])
        info = op.diagnostics()
        info["spectrum_note"] = spec.note
        info["spectrum_converged"] = all(s.converged for s in specs)
        if k > 1:
            info["per_seed"] = per_seed
        if method != "empirical" and spec.method != "dense" and self.spectrum == "auto":
            info["spectrum_choice"] = (f"Arnoldi on the matrix-free operator (d = {op.shape[0]} "
                                       "> the Krylov basis size, forming J would cost more)")
        bounds = self._bounds(loop, G, rho)
        status, reason = checks["status"], checks["reason"]
        if status == "ok" and method == "implicit" and info.get("negative_curvature"):
            status, reason = "ill_conditioned", info["warning"]
        if status == "ok" and method == "dense" and info.get("hessian_min_eig", 1.0) <= 0:
            status, reason = "ill_conditioned", info["warning"]
        norms = np.array([s.spectral_norm for s in specs], float)
        return JacobianResult(
            method=method, spectral_radius=rho,
            spectral_norm=float(np.mean(norms)) if np.all(np.isfinite(norms)) else math.nan,
            eigenvalues=eig, n_matvecs=n_apps, n_evaluations=int(sum(g.n_evaluations
                                                                     for g in Gs)),
            wall_time=time.perf_counter() - t0, spectrum_method=spec.method, at=op.at,
            point=op.point, theta_star=op.theta_star, residual=op.residual,
            lam=float(G.config.lam), matrix=op.matrix, bounds=bounds, info=info,
            status=status, status_reason=reason, spectral_radius_ci=ci,
            spectral_radius_se=se, spectral_radii=tuple(float(r) for r in rhos),
            eigenvalues_sd=eig_sd, seeds=tuple(g.seed for g in Gs),
            confidence=self.confidence, n_applications=n_apps, at_reason=at_reason,
            checks={k_: v for k_, v in checks.items() if k_ != "n_applications"})

    def _checks(self, G: RetrainingMap, op: JacobianOperator, method: str) -> dict[str, Any]:
        """Differentiability of the map at the first seed's point, and agreement of the
        method's J with its finite differences (:func:`~stabfw.analysis.jacobian.checks.
        check_map`)."""
        fd = self.method_options("finite_difference")
        x = op.point
        # probe at the scale the method itself looks at the map (its step or kick)
        rel = (self.method_options("empirical").perturbation if method == "empirical"
               else fd.fd_step)
        h = rel * max(1.0, float(np.linalg.norm(x)))
        image = op.image if op.image is not None else G(x)
        extra, basis = [], None
        if op.matrix is not None:  # the claimed leading eigenvector is probed too
            if op.ritz_values is not None and op.subspace is not None:
                basis = op.subspace
            M = op.matrix if basis is None else basis.T @ op.matrix @ basis
            w, V = np.linalg.eig(M)
            v = V[:, int(np.argmax(np.abs(w)))]
            extra = [v if basis is None else basis @ v]
        dirs = probe_directions(x.size, 2, self.random_state, basis, extra)
        m0 = op.n_matvecs
        apply_J = None if method == "finite_difference" else op.matvec
        init = image if fd.fd_init == "fitted" else None
        out = check_map(G, x, image, h, dirs, init, apply_J, method, op.info)
        out["n_applications"] = op.n_matvecs - m0 if op.matrix is None else 0
        return out

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


def solve_map(G: RetrainingMap, options: SolveOptions | None) -> FixedPointSolution:
    """G's fixed point solved from θ* with ``options``, J by ``dense`` for ``newton``: how
    every analysis of a config finds the point it linearises at. Solved once per map and
    options (``G.solutions``): the Jacobians and the λ curve at the run's λ share it."""
    o = options or SolveOptions()
    key = o.model_dump_json()
    if key not in G.solutions:
        newton = o.method == "newton"
        G.solutions[key] = solve_from_theta_star(
            G, o, jacobian=dense.map_jacobian(G.loop, G) if newton else None)
    return G.solutions[key]


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


def _mean_eigenvalues(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean over seeds of each seed's sorted leading eigenvalues, and their spread
    (√ of the mean squared complex deviation, ddof 1); one seed: its own, no spread."""
    n = min(len(e) for e in lists)
    E = np.stack([np.asarray(e, complex)[:n] for e in lists])
    if E.shape[0] == 1:
        return E[0], None
    mean = E.mean(axis=0)
    sd = np.sqrt(np.sum(np.abs(E - mean) ** 2, axis=0) / (E.shape[0] - 1))
    return mean, sd
