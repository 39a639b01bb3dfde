"""The ``analysis:`` section of a run file, and the typed options of every analyzer.

A run file selects analyzers and their options::

    analysis:
      fixed_point: {metrics: [cov_trace]}          # FixedPointAnalyzer on θ (+ metrics)
      jacobian:                                      # JacobianAnalyzer, one entry per method
        methods: [finite_difference, empirical]
        at: auto                                     # or theta_star, fixed_point
        seeds: 5                                     # replicates: mean ρ and its CI
        options: {fd_step: 1.0e-4}
      solve: {method: anderson}                      # the fixed point of the map
      lambda_curve: {lams: [0.25, 0.5, 1, 2]}        # ρ(J) against λ, with Theorem 1
      critical_lambda: {bracket: [0, 4]}             # where ρ(J) crosses 1

Each Jacobian method's options are a pydantic model (:data:`METHOD_OPTIONS`), so a config's
``options`` are type-checked by ``stabfw validate``; :class:`stabfw.JacobianAnalyzer`
validates its keyword arguments with the same models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stabfw.errors import ConfigError, format_validation_error

__all__ = [
    "JACOBIAN_METHODS",
    "METHOD_OPTIONS",
    "AnalysisConfig",
    "CriticalOptions",
    "DenseOptions",
    "EmpiricalOptions",
    "FiniteDifferenceOptions",
    "FixedPointOptions",
    "HeadlineOptions",
    "ImplicitOptions",
    "JacobianOptions",
    "LambdaCurveOptions",
    "SolveOptions",
    "method_options",
]

JACOBIAN_METHODS = ("dense", "implicit", "finite_difference", "empirical")
MethodName = Literal["auto", "dense", "implicit", "finite_difference", "empirical"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


# --- the options of each Jacobian method ---------------------------------------------------
class _Polish(_Section):
    newton_tol: float = Field(default=1e-10, gt=0,
                              description="polish the fitted point until max |∇H| ≤ this")
    newton_max_iter: int = Field(default=20, ge=0)
    n_synthetic: int | None = Field(
        default=None, ge=1, description="synthetic noise draws (weighted as λ) instead of ⌊λn⌋")


class DenseOptions(_Polish):
    """``dense``: autodiff through Newton steps from the converged fit (the test oracle)."""

    max_dense_dim: int = Field(default=400, ge=1, description="largest θ for which J is formed")
    chord_steps: int = Field(default=2, ge=1, description="Newton steps differentiated through")
    chunk_size: int = Field(default=32, ge=1, description="torch.func.jacrev chunk")


class ImplicitOptions(_Polish):
    """``implicit``: J = −A⁻¹C by Hessian-vector products and conjugate gradients."""

    cg_tol: float = Field(default=1e-10, gt=0)
    cg_maxiter: int | None = Field(default=None, ge=1, description="default max(10·d, 200)")
    preconditioner: Literal["jacobi"] | None = None


class FiniteDifferenceOptions(_Section):
    """``finite_difference``: differences of the black-box map with common random numbers."""

    fd_step: float = Field(default=1e-4, gt=0, description="h = fd_step·max(1, ‖θ‖)")
    fd_scheme: Literal["central", "forward"] = "central"
    fd_init: Literal["fitted", "map"] = Field(
        default="fitted", description="warm start of perturbed refits: the unperturbed fit "
        "(exact for converging fitters) or the perturbed generating state, as a run does")


class EmpiricalOptions(_Section):
    """``empirical``: system identification from short perturbed trajectories."""

    n_trajectories: int | None = Field(default=None, ge=1)
    n_steps: int | None = Field(default=None, ge=1)
    perturbation: float = Field(default=1e-3, gt=0, description="relative size of the kicks")
    fd_init: Literal["fitted", "map"] = "fitted"


#: The options model of each Jacobian method.
METHOD_OPTIONS: dict[str, type[BaseModel]] = {
    "dense": DenseOptions,
    "implicit": ImplicitOptions,
    "finite_difference": FiniteDifferenceOptions,
    "empirical": EmpiricalOptions,
}


def method_options(methods: Iterable[str], options: dict[str, Any] | None,
                   where: str = "analysis.jacobian.options") -> dict[str, BaseModel]:
    """Validate ``options`` for each of ``methods``; return each method's options model.

    A key applies to every listed method whose model has it; a key no listed method knows,
    or a value of the wrong type, is a :class:`~stabfw.ConfigError` naming the field.
    ``auto`` stands for all four methods.
    """
    options = dict(options or {})
    names = [m for m in methods if m != "auto"]
    if "auto" in methods or not names:
        names = list(JACOBIAN_METHODS)
    known = {m: set(METHOD_OPTIONS[m].model_fields) for m in names}
    unknown = sorted(set(options) - set().union(*known.values()))
    if unknown:
        accepted = sorted(set().union(*known.values()))
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} for method(s) "
                          f"{', '.join(names)}; accepted: {', '.join(accepted)}")
    out = {}
    for m in names:
        try:
            out[m] = METHOD_OPTIONS[m].model_validate(
                {k: v for k, v in options.items() if k in known[m]})
        except ValidationError as err:
            # one line, so that a config's error joins this path to the section's
            lines = format_validation_error(err, prefix=where).splitlines()[1:]
            raise ConfigError("; ".join(line.strip() for line in lines)) from None
    return out


class SolveOptions(_Section):
    """How a fixed point of the retraining map is solved for (``analysis.solve``, and the
    point of ``at: fixed_point``); one set of defaults everywhere.

    ``newton`` (differentiable domains) forms G's Jacobian by ``dense`` autodiff at every
    step: for maps that contract slowly or not uniformly, where Anderson can stall."""

    method: Literal["picard", "anderson", "newton"] = "anderson"
    tol: float = Field(default=1e-10, gt=0)
    rtol: float = Field(default=1e-8, ge=0)
    max_iter: int = Field(default=200, ge=1)
    damping: float = Field(default=1.0, gt=0, le=1)
    memory: int = Field(default=5, ge=0, description="anderson only")
    seed: int | None = Field(default=None, ge=0)

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`stabfw.analysis.solvers.solve_fixed_point`."""
        kw: dict[str, Any] = {"tol": self.tol, "rtol": self.rtol, "max_iter": self.max_iter}
        if self.method != "newton":  # a Newton step is sized by its line search
            kw["damping"] = self.damping
        if self.method == "anderson":
            kw["memory"] = self.memory
        return kw


class _WithOptions(_Section):
    options: dict[str, Any] = Field(default_factory=dict)

    def _methods(self) -> list[str]:
        return [getattr(self, "method", "auto")]

    @model_validator(mode="after")
    def _check_options(self):
        method_options(self._methods(), self.options, "options")  # raises on bad options
        return self


class FixedPointOptions(_Section):
    """``analysis.fixed_point``: the trajectory analyzer on θ and, optionally, metrics."""

    metrics: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.9, gt=0, lt=1)
    burn_in: int | None = Field(default=None, ge=0,
                                description="first stationary generation (default: from the data)")
    n_bootstrap: int = Field(default=400, ge=0)


class HeadlineOptions(_Section):
    """``analysis.headline``: the summary of a run or sweep (verdict, ρ(J) against theory,
    Theorem 1, λ*).

    ``theory``: the closed form to print beside ρ(J) (``auto``: λ/(1+λ) for the Gaussian on
    fixed real data). ``constants``: Theorem 1's α, L, ε by hand (else those the Jacobian
    analyzer estimated).
    """

    theory: Literal["auto", "exponential_family", "none"] = "auto"
    constants: dict[str, float] | None = None

    @field_validator("constants")
    @classmethod
    def _consts(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and set(v) != {"alpha", "L", "eps"}:
            raise ValueError("constants needs exactly the keys alpha, L, eps")
        return v


class JacobianOptions(_WithOptions):
    """``analysis.jacobian``: the spectrum of J by one or more methods."""

    methods: list[MethodName] = Field(default_factory=lambda: ["auto"], min_length=1)
    at: Literal["auto", "theta_star", "fixed_point"] = Field(
        default="auto", description="auto: θ* where it is a fixed point up to the map's "
        "noise, else each seed's fixed point (the result's `at` says which)")
    spectrum: Literal["auto", "dense", "power", "arnoldi"] = "auto"
    k: int = Field(default=6, ge=1)
    tol: float = Field(default=1e-3, gt=0)
    seed: int | None = Field(default=None, ge=0)
    seeds: int = Field(default=1, ge=1, description="replicates measured (mean and CI of ρ)")
    bounds: bool | Literal["auto"] = "auto"

    def _methods(self) -> list[str]:
        return list(self.methods)


class LambdaCurveOptions(_WithOptions):
    """``analysis.lambda_curve``: ρ(J) on a grid of λ beside Theorem 1's ρ(λ).

    ``constants`` gives α, L, ε by hand (e.g. ``{alpha: 1, L: 0, eps: 0}`` for a Gaussian
    mean with σ = 1); otherwise they are estimated for differentiable domains.
    ``at: fixed_point`` solves each λ's fixed point first (Anderson): the stability of
    the point the loop actually settles at, where θ* is not a fixed point; ``auto`` (the
    default) does so only where θ* is not a fixed point up to the map's noise.
    """

    lams: list[float] = Field(min_length=1)
    method: MethodName = "auto"
    at: Literal["auto", "theta_star", "fixed_point"] = "auto"
    replicates: int = Field(default=1, ge=1)
    constants: dict[str, float] | None = None

    @field_validator("lams")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if any(not (x >= 0 and math.isfinite(x)) for x in v):
            raise ValueError("λ values must be finite and ≥ 0")
        return sorted(v)

    @field_validator("constants")
    @classmethod
    def _consts(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and set(v) != {"alpha", "L", "eps"}:
            raise ValueError("constants needs exactly the keys alpha, L, eps")
        return v


class CriticalOptions(_WithOptions):
    """``analysis.critical_lambda``: where ρ(J) (or the verdict) crosses 1."""

    criterion: Literal["spectral_radius", "verdict"] = "spectral_radius"
    method: MethodName = "finite_difference"
    bracket: tuple[float, float] = (0.0, 4.0)
    tol: float = Field(default=0.02, gt=0)
    max_lam: float = Field(default=1e3, gt=0)
    n_replicates: int = Field(default=1, ge=1)


def _toggle(v: Any) -> Any:
    """``true`` means the section with its defaults, ``false`` leaves it out."""
    if v is True:
        return {}
    if v is False:
        return None
    return v


class AnalysisConfig(_Section):
    """``analysis:`` section: which analyzers run after (or on) a run, with their options.

    Each entry is a mapping of options, ``true`` for the defaults or ``false``/absent to
    skip it (``fixed_point`` runs unless set to ``false``).
    """

    fixed_point: FixedPointOptions | None = Field(default_factory=FixedPointOptions)
    jacobian: JacobianOptions | None = None
    solve: SolveOptions | None = None
    lambda_curve: LambdaCurveOptions | None = None
    critical_lambda: CriticalOptions | None = None
    headline: HeadlineOptions | None = Field(default_factory=HeadlineOptions)

    @field_validator("fixed_point", "jacobian", "solve", "lambda_curve", "critical_lambda",
                     "headline", mode="before")
    @classmethod
    def _toggles(cls, v: Any) -> Any:
        return _toggle(v)
