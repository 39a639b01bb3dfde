"""The Jacobian analyzer: local stability of the retraining map at θ* (or its fixed point).

``J = ∂G_λ/∂θ`` where ``G_λ`` is one generation of the loop (:class:`RetrainingMap`: generate
with the given θ, mix with the real data, refit — with common random numbers). The loop
is locally stable where the spectral radius ρ(J) < 1. Four ways to apply J, one
matrix-free operator (:class:`~stabfw.spectra.CountingOperator`) for all:

``dense``
    Autodiff of the whole map of a differentiable domain (the test oracle). The fit is
    the exact arg-min of the mixed objective, computed by Newton's method; the map that is
    differentiated is "sample(θ) → mixed loss → ``chord_steps`` Newton steps with the
    Hessian frozen at the converged point", started from that point. Because the start
    is a converged minimiser, autodiff through these steps gives the derivative of the
    arg-min itself (each step contracts the derivative's error by ‖I − P·A‖ ≈ 0), without
    using the implicit-function formula. ``torch.func.jacrev`` forms J densely.
``implicit``
    The implicit function theorem at the arg-min θ̂ = G(θ): ``J = −A⁻¹C`` with A the
    Hessian of the mixed objective in the fitted parameters and C its cross-derivative in
    the generating parameters. A v is a Hessian-vector product (forward-over-reverse),
    A⁻¹ conjugate gradients (optionally Jacobi-preconditioned), C v a Jacobian-vector
    product through the reparameterised sampler; ``Jᵀ u = −Cᵀ A⁻¹ u`` by a vector-Jacobian
    product. θ̂ is polished by Newton–CG first, so the formula holds to ``newton_tol``.
    Attention layers run under the math SDPA kernel (double backward).
``finite_difference``
    Central differences of the black-box map along the direction of v; works for any
    learner whose domain implements ``with_params`` (sklearn, sktime, ...).
``empirical``
    System identification: short trajectories of the map started at random
    perturbations of the point, and a least-squares fit ``δ_{t+1} ≈ J δ_t`` of their
    deviations from the unperturbed trajectory (exact DMD when the snapshots do not span
    ℝ^d). Cost and fit residual are reported.

The operator can be built at θ* (default), at the fixed point the loop actually has
(``at="fixed_point"``, found by Anderson acceleration) or at any given θ. θ* is a fixed
point of every maximum-likelihood loop with infinite samples, but not of loops with
selection or feedback, nor exactly of a finite-sample map: the result reports
``residual = ‖G(θ) − θ‖``.

References
----------
Bertrand et al., "On the Stability of Iterative Retraining of Generative Models on their
own Data", ICLR 2024 (J at θ*, Theorem 1). Krantz & Parks, *The Implicit Function
Theorem*, Birkhäuser 2002. Pearlmutter, "Fast exact multiplication by the Hessian",
Neural Computation 6(1), 1994. Hestenes & Stiefel, "Methods of conjugate gradients",
J. Res. NBS 49, 1952. Schmid, "Dynamic mode decomposition", J. Fluid Mech. 656, 2010.
Bolte, Pauwels & Vaiter, "One-step differentiation of iterative algorithms", NeurIPS 2023
(differentiating Newton steps from a converged point).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw.fixed_point import RetrainingMap
from stabfw.spectra import CountingOperator, Spectrum, spectrum

__all__ = ["METHODS", "JacobianAnalyzer", "JacobianOperator", "JacobianResult"]

METHODS = ("dense", "implicit", "finite_difference", "empirical")
Method = Literal["auto", "dense", "implicit", "finite_difference", "empirical"]


class JacobianOperator(CountingOperator):
    """``v ↦ J v`` at a point, with where it was built and what it cost.

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
        Method diagnostics (CG iterations, Newton polish, ...).
    """

    def __init__(self, matvec, dim, rmatvec=None, matrix=None, **attrs: Any):
        super().__init__(matvec, dim, rmatvec, matrix)
        self.method = attrs.pop("method")
        self.point = attrs.pop("point")
        self.theta_star = attrs.pop("theta_star")
        self.residual = attrs.pop("residual")
        self.at = attrs.pop("at")
        self.retraining_map = attrs.pop("retraining_map")
        self.info: dict[str, Any] = attrs.pop("info", {})
        self.setup_map_evaluations = attrs.pop("setup_map_evaluations", 0)


@dataclass(frozen=True)
class JacobianResult:
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
    n_map_evaluations : int
        Refits of the loop, all included (finding the point, the residual, differences).
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
        Theorem 1 beside the measured ρ (:func:`stabfw.bounds.theorem1_report`).
    info : dict
    """

    method: str
    spectral_radius: float
    spectral_norm: float
    eigenvalues: np.ndarray
    n_matvecs: int
    n_map_evaluations: int
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

        def f(x: Any) -> float | None:
            try:
                x = float(x)
            except (TypeError, ValueError):
                return None
            return x if math.isfinite(x) else None

        return {
            "method": self.method,
            "spectral_radius": f(self.spectral_radius),
            "spectral_norm": f(self.spectral_norm),
            "eigenvalues": [[f(e.real), f(e.imag)] for e in np.asarray(self.eigenvalues, complex)],
            "stable": self.stable,
            "n_matvecs": int(self.n_matvecs),
            "n_map_evaluations": int(self.n_map_evaluations),
            "wall_time": round(float(self.wall_time), 4),
            "spectrum_method": self.spectrum_method,
            "at": self.at,
            "dim": self.dim,
            "lam": f(self.lam) if math.isfinite(self.lam) else "inf",
            "residual": f(self.residual),
            "residual_relative": f(self.residual / max(np.linalg.norm(self.point), 1e-300)),
            "distance_to_theta_star": f(np.linalg.norm(self.point - self.theta_star)),
            "bounds": self.bounds,
            "info": _jsonable(self.info),
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist()) if obj.size <= 64 else f"array{obj.shape}"
    if isinstance(obj, (complex, np.complexfloating)):
        return [float(obj.real), float(obj.imag)]
    return obj


# --- torch machinery of the differentiable methods ------------------------------------------
class _Torch:
    """The mixed objective of one generation and its derivatives, as torch closures."""

    def __init__(self, loop: Any, G: RetrainingMap, x: np.ndarray, n_synthetic: int | None):
        import torch

        from stabfw.differentiable import MixedObjective

        self.torch = torch
        w_real, w_syn = G.weights
        m = G.n_synthetic if n_synthetic is None else int(n_synthetic)
        if m < 1 and w_syn > 0:
            raise ValueError("n_synthetic must be ≥ 1")
        noise = loop.draw_noise(m, G.streams("generate")) if w_syn > 0 else None
        real = None if G.config.fully_synthetic else G.real
        self.H = MixedObjective(loop, real, noise, w_real, w_syn)
        self.n_synthetic = m if w_syn > 0 else 0
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        self.gradf = torch.func.grad(self.H.__call__, argnums=0)
        self.n_hvp = self.n_cvp = self.n_ctvp = 0

    def t(self, v: Any):
        return self.torch.as_tensor(np.asarray(v, dtype=np.float64))

    def value(self, th) -> float:
        with self.torch.no_grad():
            return float(self.H(th, self.x))

    def grad(self, th):
        return self.gradf(th, self.x)

    def hvp(self, th, v):
        """A v at (th, x) by forward-over-reverse (used while polishing th)."""
        self.n_hvp += 1
        return self.torch.func.jvp(lambda a: self.gradf(a, self.x), (th,), (v,))[1]

    def linearize(self, th) -> None:
        """Record ∇_θ' H at (th, x) once, with its graph, for fast A v, C v and Cᵀ u.

        Each product is then one or two backward passes through the stored graph
        (Pearlmutter's double-backward trick) instead of a fresh trace of the model.
        """
        torch = self.torch
        self._th = th.detach().clone().requires_grad_(True)
        self._xs = self.x.detach().clone().requires_grad_(True)
        value = self.H(self._th, self._xs)
        (self._g,) = torch.autograd.grad(value, self._th, create_graph=True)
        self._u0 = torch.zeros_like(self._g, requires_grad=True)
        (self._w,) = torch.autograd.grad(self._g, self._xs, self._u0, create_graph=True,
                                          allow_unused=True)
        if self._w is None:
            raise ValueError("the mixed objective does not depend on the generating θ "
                             "(no synthetic data?): C = 0")

    def hvp_lin(self, v):
        self.n_hvp += 1
        return self.torch.autograd.grad(self._g, self._th, v, retain_graph=True)[0]

    def cvp_lin(self, v):
        self.n_cvp += 1
        return self.torch.autograd.grad(self._w, self._u0, v, retain_graph=True)[0]

    def ctvp_lin(self, u):
        self.n_ctvp += 1
        return self.torch.autograd.grad(self._g, self._xs, u, retain_graph=True)[0]

    def hessian(self, th, chunk: int):
        return self.torch.func.jacrev(lambda a: self.gradf(a, self.x), chunk_size=chunk)(th)


def _cg(apply_A, b, tol: float, maxiter: int, precond=None):
    """Preconditioned conjugate gradients on torch vectors; returns (x, iters, neg_curv).

    References
    ----------
    Hestenes & Stiefel, J. Res. NBS 49, 1952; Saad, *Iterative Methods for Sparse Linear
    Systems*, 2nd ed., SIAM 2003, §9.2 (preconditioned CG).
    """
    import torch

    x = torch.zeros_like(b)
    r = b.clone()
    bn = float(torch.linalg.vector_norm(b))
    if bn == 0:
        return x, 0, False
    z = r / precond if precond is not None else r
    p = z.clone()
    rz = float(r @ z)
    neg = False
    for it in range(1, maxiter + 1):
        Ap = apply_A(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            neg = True
            if it == 1:
                return b / max(float(torch.linalg.vector_norm(b)), 1e-300), it, neg
            break
        a = rz / pAp
        x = x + a * p
        r = r - a * Ap
        if float(torch.linalg.vector_norm(r)) <= tol * bn:
            return x, it, neg
        z = r / precond if precond is not None else r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, maxiter, neg


def _jacobi_diagonal(T: _Torch, d: int, seed: int, n_probes: int = 64):
    """diag(A): exact from d products up to d = 256, a Hutchinson estimate above.

    References
    ----------
    Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a matrix", Appl. Numer.
    Math. 57, 2007.
    """
    torch = T.torch
    if d <= 256:
        eye = torch.eye(d, dtype=torch.float64)
        diag = torch.stack([T.hvp_lin(eye[i])[i] for i in range(d)])
    else:
        gen = torch.Generator().manual_seed(seed)
        acc = torch.zeros(d, dtype=torch.float64)
        for _ in range(n_probes):
            z = torch.randint(0, 2, (d,), generator=gen, dtype=torch.float64) * 2 - 1
            acc += z * T.hvp_lin(z)
        diag = acc / n_probes
    floor = max(float(diag.abs().mean()) * 1e-3, 1e-12)
    return diag.detach().abs().clamp_min(floor)


def _newton_polish(T: _Torch, theta0: np.ndarray, tol: float, max_iter: int, solve) -> tuple:
    """Newton steps with a backtracking line search until max|∇H| ≤ tol."""
    th = T.t(theta0)
    g = T.grad(th)
    it = 0
    for it in range(1, max_iter + 1):
        if float(g.abs().max()) <= tol:
            it -= 1
            break
        step = -solve(th, g)
        f0, slope = T.value(th), float(g @ step)
        if slope >= 0:  # not a descent direction (negative curvature): gradient step
            step, slope = -g, -float(g @ g)
        s = 1.0
        # below ~1e-12 the predicted decrease is lost in rounding of H: take the full step
        if abs(slope) > 1e-12 * max(1.0, abs(f0)):
            while s > 1e-10 and T.value(th + s * step) > f0 + 1e-4 * s * slope:
                s *= 0.5
        th = th + s * step
        g = T.grad(th)
    return th, float(g.abs().max()), it


# --- the analyzer -----------------------------------------------------------------------------
class JacobianAnalyzer:
    """Spectrum of ``J = ∂G_λ/∂θ`` for a loop, by one of four methods.

    Parameters
    ----------
    method : {"auto", "dense", "implicit", "finite_difference", "empirical"}
        ``auto``: ``implicit`` for differentiable domains without curate/correct hooks,
        ``finite_difference`` otherwise.
    spectrum : {"auto", "dense", "power", "arnoldi"}
        How to get eigenvalues from the operator (``auto``: the matrix when ``dense``
        formed it or d ≤ 40, Arnoldi above). ``empirical`` always uses its fitted matrix.
    k : int
        Leading eigenvalues to report.
    tol : float
        Relative accuracy of the iterative spectra.
    seed : int, optional
        The replicate whose streams define the map (default: the config's first seed).
    max_dense_dim : int
        Largest θ for which ``dense`` forms J.
    fd_step : float
        Finite-difference step, relative: ``h = fd_step·max(1, ‖θ‖)``.
    fd_scheme : {"central", "forward"}
    fd_init : {"fitted", "map"}
        Warm start of the perturbed refits of ``finite_difference`` and ``empirical``
        (when the config warm-starts): from the unperturbed fit G(θ) (``fitted``: fast,
        and exact for fitters that converge to the arg-min) or from the perturbed
        generating state, as a run does (``map``: for fitters that stop early, e.g. a
        fixed number of SGD steps, whose result depends on the start).
    n_trajectories, n_steps : int, optional
        ``empirical``: trajectories and steps per trajectory (default: d trajectories of
        2 steps, twice the snapshots needed to identify J, up to d = 60; 4 trajectories of
        10 steps above). Away from a fixed point the reference trajectory drifts and the
        fit averages J along it; ``at="fixed_point"`` avoids that.
    perturbation : float
        ``empirical``: relative size of the initial perturbations.
    cg_tol, cg_maxiter : float, int
        ``implicit``: relative residual of conjugate gradients and their cap
        (default ``max(10·d, 200)``).
    preconditioner : {None, "jacobi"}
        ``implicit``: Jacobi preconditioning with a Hutchinson estimate of diag(A).
    newton_tol, newton_max_iter : float, int
        Polish of the fitted point before ``dense``/``implicit`` (max |gradient|).
    chord_steps : int
        ``dense``: Newton steps differentiated through.
    n_synthetic : int, optional
        ``dense``/``implicit``: use this many synthetic noise draws (weighted as λ)
        instead of ⌊λn⌋, approaching the infinite-sample Jacobian.
    bounds : {"auto", True, False}
        Estimate α, L, ε and report Theorem 1 beside ρ (``auto``: for differentiable
        domains with finite λ).
    solver, solver_options
        How ``at="fixed_point"`` finds the fixed point.
    chunk_size : int
        ``torch.func.jacrev`` chunk (memory vs speed of ``dense``).
    norm : bool
        Also compute the spectral norm (Lanczos on JᵀJ: about as many applications of J
        and Jᵀ again as the eigenvalues took; free when J is formed).
    random_state : int
        Perturbation directions and iterative start vectors.
    """

    def __init__(self, method: Method = "auto", spectrum: str = "auto", k: int = 6,
                 tol: float = 1e-3, seed: int | None = None, max_dense_dim: int = 400,
                 fd_step: float = 1e-4, fd_scheme: Literal["central", "forward"] = "central",
                 fd_init: Literal["fitted", "map"] = "fitted",
                 n_trajectories: int | None = None, n_steps: int | None = None,
                 perturbation: float = 1e-3, cg_tol: float = 1e-10, cg_maxiter: int | None = None,
                 preconditioner: Literal["jacobi"] | None = None, newton_tol: float = 1e-10,
                 newton_max_iter: int = 20, chord_steps: int = 2, n_synthetic: int | None = None,
                 bounds: Any = "auto", solver: str = "anderson",
                 solver_options: dict[str, Any] | None = None, chunk_size: int = 32,
                 norm: bool = True, random_state: int = 0):
        self.method = method
        self.spectrum = spectrum
        self.k = k
        self.tol = tol
        self.seed = seed
        self.max_dense_dim = max_dense_dim
        self.fd_step = fd_step
        self.fd_scheme = fd_scheme
        self.fd_init = fd_init
        self.n_trajectories = n_trajectories
        self.n_steps = n_steps
        self.perturbation = perturbation
        self.cg_tol = cg_tol
        self.cg_maxiter = cg_maxiter
        self.preconditioner = preconditioner
        self.newton_tol = newton_tol
        self.newton_max_iter = newton_max_iter
        self.chord_steps = chord_steps
        self.n_synthetic = n_synthetic
        self.bounds = bounds
        self.solver = solver
        self.solver_options = solver_options
        self.chunk_size = chunk_size
        self.norm = norm
        self.random_state = random_state

    # --- validation -----------------------------------------------------------------------
    def _resolve_method(self, loop: Any, G: RetrainingMap) -> str:
        from stabfw.differentiable import is_differentiable, require_differentiable

        method = self.method
        if method == "auto":
            method = "implicit" if (is_differentiable(loop) and not G.has_hooks) else "finite_difference"
        if method not in METHODS:
            raise ValueError(f"method must be one of auto, {', '.join(METHODS)}; got {method!r}")
        if method in ("dense", "implicit"):
            require_differentiable(loop, method)
            if G.has_hooks:
                raise ValueError(f"method={method!r} cannot differentiate through curate/correct "
                                 "hooks; use 'finite_difference' or 'empirical'")
        if self.spectrum not in ("auto", "dense", "power", "arnoldi"):
            raise ValueError("spectrum must be auto, dense, power or arnoldi; "
                             f"got {self.spectrum!r}")
        if self.fd_init not in ("fitted", "map"):
            raise ValueError(f"fd_init must be fitted or map; got {self.fd_init!r}")
        if self.fd_scheme not in ("central", "forward"):
            raise ValueError(f"fd_scheme must be central or forward; got {self.fd_scheme!r}")
        if self.preconditioner not in (None, "jacobi"):
            raise ValueError(f"preconditioner must be None or 'jacobi'; got {self.preconditioner!r}")
        return method

    def _point(self, G: RetrainingMap, at: Any) -> tuple[np.ndarray, str, dict[str, Any]]:
        from stabfw.solvers import FixedPointSolution

        theta_star = G.theta_star
        if isinstance(at, FixedPointSolution):  # a fixed point found already
            return np.asarray(at.fixed_point, float), "fixed_point", {
                "solve": at.to_dict() | {"fixed_point": None}}
        if at is None or (isinstance(at, str) and at == "theta_star"):
            return theta_star, "theta_star", {}
        if isinstance(at, str):
            if at != "fixed_point":
                raise ValueError(f"at must be None, 'theta_star', 'fixed_point' or an array; got {at!r}")
            from stabfw.solvers import solve_fixed_point

            opts = {"rtol": 1e-8, "max_iter": 100, **(self.solver_options or {})}
            sol = solve_fixed_point(G, theta_star, method=self.solver, **opts)
            return sol.fixed_point, "fixed_point", {"solve": sol.to_dict() | {"fixed_point": None}}
        x = np.asarray(at, dtype=float).reshape(-1)
        if x.shape != theta_star.shape:
            raise ValueError(f"at has length {x.size}; θ has {theta_star.size}")
        return x, "given", {}

    # --- operators ----------------------------------------------------------------------------
    def operator(self, loop: Any, config: Any, at: Any = None) -> JacobianOperator:
        """The matrix-free operator ``v ↦ J v`` (``empirical`` returns its fitted matrix)."""
        G = RetrainingMap(loop, config, seed=self.seed)
        method = self._resolve_method(loop, G)
        return self._build(loop, G, method, at)

    def _build(self, loop: Any, G: RetrainingMap, method: str, at: Any) -> JacobianOperator:
        x, at_label, info = self._point(G, at)
        gx = G(x)
        residual = float(np.linalg.norm(gx - x))
        common = {"method": method, "point": x, "theta_star": G.theta_star, "residual": residual,
                  "at": at_label, "retraining_map": G, "info": info}
        d = x.size
        if method == "finite_difference":
            return self._finite_difference(G, x, gx, common)
        if method == "empirical":
            J, emp = self._empirical(G, x)
            info.update(emp)
            return JacobianOperator(lambda v: J @ v, d, lambda u: J.T @ u, matrix=J, **common)
        if method == "dense":
            if d > self.max_dense_dim:
                raise ValueError(f"method='dense' forms a {d}×{d} Jacobian; θ has more than "
                                 f"max_dense_dim={self.max_dense_dim} entries (raise it or use "
                                 "'implicit')")
            J = self._dense(loop, G, x, gx, info)
            return JacobianOperator(lambda v: J @ v, d, lambda u: J.T @ u, matrix=J, **common)
        return self._implicit(loop, G, x, gx, common)

    def _finite_difference(self, G, x, gx, common) -> JacobianOperator:
        h = self.fd_step * max(1.0, float(np.linalg.norm(x)))
        central = self.fd_scheme == "central"
        init = gx if self.fd_init == "fitted" else None

        def matvec(v):
            nv = float(np.linalg.norm(v))
            if nv == 0:
                return np.zeros_like(x)
            u = v / nv
            if central:
                return (G(x + h * u, init) - G(x - h * u, init)) * (nv / (2 * h))
            return (G(x + h * u, init) - gx) * (nv / h)

        common["info"].update({"fd_step_abs": h, "fd_scheme": self.fd_scheme})
        return JacobianOperator(matvec, x.size, **common)

    def _empirical(self, G: RetrainingMap, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        d = x.size
        if self.n_steps is not None or self.n_trajectories is not None:
            T = self.n_steps or 2
            K = self.n_trajectories or max(2, math.ceil(1.5 * min(d, 60) / T))
        elif d <= 60:
            T, K = 2, max(2, d)
        else:
            T, K = 10, 4
        rng = np.random.default_rng(self.random_state)
        eps = self.perturbation * max(1.0, float(np.linalg.norm(x)))
        ref = [x]
        for _ in range(T):
            ref.append(G(ref[-1]))
        Xs, Ys = [], []
        for _ in range(K):
            u = rng.standard_normal(d)
            y = x + eps * u / np.linalg.norm(u)
            for t in range(T):
                y_next = G(y, ref[t + 1] if self.fd_init == "fitted" else None)
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
                "reference_drift": float(np.linalg.norm(ref[-1] - x))}
        if r < d:
            info["_reduced_eigenvalues"] = np.linalg.eigvals(Ur.T @ Y @ Vr / sr)
        return J, info

    def _dense(self, loop, G, x, gx, info) -> np.ndarray:
        torch_ = _Torch(loop, G, x, self.n_synthetic)
        torch = torch_.torch
        from stabfw.differentiable import math_attention

        chunk = self.chunk_size
        with math_attention():
            def solve(th, g):
                Hm = torch_.hessian(th, chunk)
                return torch.linalg.solve(0.5 * (Hm + Hm.T), g)

            th0, gmax, its = _newton_polish(torch_, gx, self.newton_tol, self.newton_max_iter, solve)
            Hm = torch_.hessian(th0, chunk)
            Hm = 0.5 * (Hm + Hm.T)
            eig = torch.linalg.eigvalsh(Hm)
            P = torch.linalg.inv(Hm)
            th0 = th0.detach()

            def F(s):
                t = th0
                for _ in range(self.chord_steps):
                    t = t - P @ torch_.gradf(t, s)
                return t

            J = torch.func.jacrev(F, chunk_size=chunk)(torch_.x).detach().numpy()
        info.update({"newton_iterations": its, "fit_grad_max": gmax,
                     "hessian_min_eig": float(eig[0]), "hessian_max_eig": float(eig[-1]),
                     "chord_steps": self.chord_steps,
                     "n_synthetic": torch_.n_synthetic,
                     "fitted_point_shift": float(np.linalg.norm(th0.numpy() - gx))})
        if float(eig[0]) <= 0:
            info["warning"] = ("the mixed objective's Hessian is not positive definite at the "
                               "fitted point: not a strict local minimum, J is not defined")
        return J

    def _implicit(self, loop, G, x, gx, common) -> JacobianOperator:
        from stabfw.differentiable import math_attention

        T = _Torch(loop, G, x, self.n_synthetic)
        d = x.size
        maxiter = self.cg_maxiter or max(10 * d, 200)
        stats = {"cg_iterations": [], "negative_curvature": False}

        with math_attention():
            def newton_solve(th, g):
                T.linearize(th)
                return _cg(T.hvp_lin, g, 1e-8, maxiter)[0].detach()

            th, gmax, its = _newton_polish(T, gx, self.newton_tol, self.newton_max_iter, newton_solve)
            th = th.detach()
            T.linearize(th)
            precond = None
            if self.preconditioner == "jacobi":
                precond = _jacobi_diagonal(T, d, self.random_state)


        def solve_A(b):
            with math_attention():
                y, it, neg = _cg(T.hvp_lin, b, self.cg_tol, maxiter, precond)
            stats["cg_iterations"].append(it)
            stats["negative_curvature"] |= neg
            return y.detach()

        def matvec(v):
            with math_attention():
                b = T.cvp_lin(T.t(v))
            return (-solve_A(b)).numpy()

        def rmatvec(u):
            y = solve_A(T.t(u))
            with math_attention():
                return (-T.ctvp_lin(y)).detach().numpy()

        op = JacobianOperator(matvec, d, rmatvec, **common)
        op.info.update({"newton_iterations": its, "fit_grad_max": gmax,
                        "fitted_point_shift": float(np.linalg.norm(th.numpy() - gx)),
                        "preconditioner": self.preconditioner, "cg_tol": self.cg_tol,
                        "n_synthetic": T.n_synthetic})
        op._torch_stats = (T, stats)
        return op

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
            the one a :class:`~stabfw.solvers.FixedPointSolution` holds) or any θ.
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
            spec = _matrix_spectrum(op.matrix, self.k, op.info)
            n_mv = op.info["n_trajectories"] * op.info["n_steps"]
        else:
            # auto: dense while forming J (d applications) is no dearer than Arnoldi's ~2·ncv
            extra = {} if self.norm or self.spectrum == "dense" else {"norm": False}
            spec = spectrum(op, method=self.spectrum, k=self.k, tol=self.tol,
                            max_dense_dim=min(self.max_dense_dim, 40), **extra)
            n_mv = op.n_matvecs
        info = dict(op.info)
        info["spectrum_note"] = spec.note
        info["spectrum_converged"] = spec.converged
        if hasattr(op, "_torch_stats"):
            T, stats = op._torch_stats
            cg = stats["cg_iterations"]
            info.update({"n_hvp": T.n_hvp, "n_cvp": T.n_cvp, "n_ctvp": T.n_ctvp,
                         "cg_iterations_mean": float(np.mean(cg)) if cg else 0.0,
                         "cg_iterations_max": int(max(cg)) if cg else 0,
                         "negative_curvature": stats["negative_curvature"]})
            if stats["negative_curvature"]:
                info["warning"] = ("conjugate gradients met negative curvature: the fitted point "
                                   "is not a strict local minimum, J is not defined")
        bounds = self._bounds(loop, G, spec.spectral_radius)
        matrix = op.matrix
        return JacobianResult(
            method=method, spectral_radius=float(spec.spectral_radius),
            spectral_norm=float(spec.spectral_norm), eigenvalues=np.asarray(spec.eigenvalues),
            n_matvecs=int(n_mv), n_map_evaluations=int(G.n_evaluations),
            wall_time=time.perf_counter() - t0, spectrum_method=spec.method, at=op.at,
            point=op.point, theta_star=op.theta_star, residual=op.residual,
            lam=float(G.config.lam), matrix=matrix, bounds=bounds, info=info)

    def _bounds(self, loop: Any, G: RetrainingMap, rho: float) -> dict[str, Any] | None:
        from stabfw.differentiable import is_differentiable

        want = self.bounds
        if want is False or (want == "auto" and not is_differentiable(loop)):
            return None if want is False else {
                "note": "α, L, ε need a differentiable domain (loss/sample/draw_noise)"}
        if not is_differentiable(loop):
            raise TypeError("bounds=True needs a differentiable domain")
        lam = float(G.config.lam)
        if not math.isfinite(lam):
            return {"note": "Theorem 1 needs a finite λ", "vacuous": True}
        from stabfw.bounds import estimate_constants, theorem1_report

        t0 = time.perf_counter()
        c = estimate_constants(loop, G.theta_star, G.real0, seed=self.random_state)
        rep = theorem1_report(lam, c["alpha"], c["L"], c["eps"], rho)
        rep["wall_time"] = round(time.perf_counter() - t0, 3)
        return rep


def _matrix_spectrum(J: np.ndarray, k: int, info: dict[str, Any]) -> Spectrum:
    t0 = time.perf_counter()
    if info.get("identified", True):
        ev = np.linalg.eigvals(J)
        note = ""
    else:
        ev = np.asarray(info.pop("_reduced_eigenvalues"))
        note = (f"J identified on a {info['rank']}-dimensional subspace only: leading eigenvalues "
                "are Ritz values, the norm a lower bound")
    order = np.lexsort((-ev.imag, -np.abs(ev)))
    ev = ev[order]
    return Spectrum(float(np.max(np.abs(ev))), float(np.linalg.norm(J, 2)), ev[:k], "empirical",
                    0, 0, time.perf_counter() - t0, True, note)
