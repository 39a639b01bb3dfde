"""The ``analysis:`` section of a run file, ``analyze_run`` and ``stabfw analyze RUN_DIR``.

A run file selects analyzers and their options::

    analysis:
      fixed_point: {metrics: [cov_trace]}          # FixedPointAnalyzer on θ (+ metrics)
      jacobian:                                      # JacobianAnalyzer, one entry per method
        methods: [finite_difference, empirical]
        at: theta_star                               # or fixed_point
        options: {fd_step: 1.0e-4}
      solve: {method: anderson}                      # the fixed point of the map
      lambda_curve: {lams: [0.25, 0.5, 1, 2]}        # ρ(J) against λ, with Theorem 1
      critical_lambda: {bracket: [0, 4]}             # where ρ(J) crosses 1

``stabfw run`` runs them after the loop and stores every result under ``analysis`` in
``summary.json`` (plus ``analysis.png``); ``stabfw analyze RUN_DIR`` runs them on a finished
run directory (with the run's own section, or one given by ``--set``/``--config``).

This module is imported by :mod:`stabfw.config`, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AnalysisConfig",
    "CriticalOptions",
    "FixedPointOptions",
    "JacobianOptions",
    "LambdaCurveOptions",
    "SolveOptions",
    "analyze_run",
    "register_cli",
]

MethodName = Literal["auto", "dense", "implicit", "finite_difference", "empirical"]

#: JacobianAnalyzer keyword arguments a config may set under ``options``.
JACOBIAN_OPTIONS = (
    "max_dense_dim", "fd_step", "fd_scheme", "fd_init", "n_trajectories", "n_steps",
    "perturbation", "cg_tol", "cg_maxiter", "preconditioner", "newton_tol", "newton_max_iter",
    "chord_steps", "n_synthetic", "solver", "solver_options", "chunk_size", "random_state",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_options(v: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(v) - set(JACOBIAN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(JACOBIAN_OPTIONS)}")
    return v


class _WithOptions(_Section):
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _check(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_options(v)


class FixedPointOptions(_Section):
    """``analysis.fixed_point``: the trajectory analyzer on θ and, optionally, metrics."""

    metrics: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.9, gt=0, lt=1)
    burn_in: int = Field(default=0, ge=0)
    n_bootstrap: int = Field(default=200, ge=0)


class JacobianOptions(_WithOptions):
    """``analysis.jacobian``: the spectrum of J by one or more methods."""

    methods: list[MethodName] = Field(default_factory=lambda: ["auto"], min_length=1)
    at: Literal["theta_star", "fixed_point"] = "theta_star"
    spectrum: Literal["auto", "dense", "power", "arnoldi"] = "auto"
    k: int = Field(default=6, ge=1)
    tol: float = Field(default=1e-3, gt=0)
    seed: int | None = Field(default=None, ge=0)
    bounds: bool | Literal["auto"] = "auto"


class SolveOptions(_Section):
    """``analysis.solve``: the fixed point of the retraining map."""

    method: Literal["picard", "anderson"] = "anderson"
    tol: float = Field(default=1e-10, gt=0)
    rtol: float = Field(default=1e-8, ge=0)
    max_iter: int = Field(default=100, ge=1)
    damping: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)


class LambdaCurveOptions(_WithOptions):
    """``analysis.lambda_curve``: ρ(J) on a grid of λ beside Theorem 1's ρ(λ).

    ``constants`` gives α, L, ε by hand (e.g. ``{alpha: 1, L: 0, eps: 0}`` for a Gaussian
    mean with σ = 1); otherwise they are estimated for differentiable domains.
    ``at: fixed_point`` solves each λ's fixed point first (Anderson): the stability of
    the point the loop actually settles at, where θ* is not a fixed point.
    """

    lams: list[float] = Field(min_length=1)
    method: MethodName = "auto"
    at: Literal["theta_star", "fixed_point"] = "theta_star"
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

    @field_validator("fixed_point", "jacobian", "solve", "lambda_curve", "critical_lambda",
                     mode="before")
    @classmethod
    def _toggles(cls, v: Any) -> Any:
        return _toggle(v)


# --- running --------------------------------------------------------------------------------
def _jacobian_analyzer(method: str, spectrum: str = "auto", k: int = 6, tol: float = 1e-3,
                       seed: int | None = None, bounds: Any = "auto", options: dict | None = None,
                       norm: bool = True):
    from stabfw.jacobian import JacobianAnalyzer

    return JacobianAnalyzer(method=method, spectrum=spectrum, k=k, tol=tol, seed=seed,
                            bounds=bounds, norm=norm, **(options or {}))


_T0: list[float] = []


def _log(msg: str, progress: bool) -> None:
    if progress:
        import sys
        import time

        if not _T0:
            _T0.append(time.perf_counter())
        print(f"[stabfw analyze {time.perf_counter() - _T0[0]:7.1f} s] {msg}", file=sys.stderr,
              flush=True)


def analyze_run(
    source: Any,
    cfg: Any | None = None,
    analysis: AnalysisConfig | dict[str, Any] | None = None,
    out: str | Path | None = None,
    report: bool | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the analyzers of an ``analysis:`` section; return their JSON-ready results.

    Parameters
    ----------
    source : Trajectory, or path of a finished run directory
    cfg : RunConfig, optional
        The run's config (read from the run directory's ``config.yaml`` when absent).
    analysis : AnalysisConfig or dict, optional
        Which analyzers (default: ``cfg.analysis``, else the fixed-point analyzer and a
        Jacobian with the automatic method).
    out : path, optional
        Where to write ``analysis.png``.
    report : bool, optional
        Write ``analysis.png`` (default: ``cfg.output.report``).
    progress : bool
        Print one line per analyzer to stderr.

    Returns
    -------
    dict
        ``fixed_point``, ``fixed_point_metrics``, ``jacobian`` (per method), ``solve``,
        ``lambda_curve``, ``critical_lambda`` — whichever ran.
    """
    from stabfw.config import RunConfig, parse_config
    from stabfw.trajectory import Trajectory

    traj = source if isinstance(source, Trajectory) else Trajectory.load(source)
    if cfg is None:
        cfg = parse_config(traj.config)
    elif not isinstance(cfg, RunConfig):
        cfg = parse_config(cfg)
    if analysis is None:
        analysis = cfg.analysis or AnalysisConfig(jacobian=JacobianOptions())
    elif not isinstance(analysis, AnalysisConfig):
        analysis = AnalysisConfig.model_validate(analysis)
    results: dict[str, Any] = {}

    if analysis.fixed_point is not None:
        from stabfw.fixed_point import FixedPointAnalyzer

        o = analysis.fixed_point
        fpa = FixedPointAnalyzer(confidence=o.confidence, burn_in=o.burn_in,
                                 n_bootstrap=o.n_bootstrap)
        _log("fixed-point analyzer on θ", progress)
        results["fixed_point"] = fpa.analyze(traj).to_dict()
        if o.metrics:
            results["fixed_point_metrics"] = {m: fpa.analyze(traj, metric=m).to_dict()
                                              for m in o.metrics}

    need_loop = any(getattr(analysis, k) is not None
                    for k in ("jacobian", "solve", "lambda_curve", "critical_lambda"))
    loop = None
    if need_loop:
        from stabfw import registry

        loop = registry.make(cfg.domain.name, **cfg.domain.params)

    maps: dict[int, Any] = {}

    def retraining_map(seed: int | None):
        """One map per replicate, shared by the analyzers: θ* is fitted once."""
        from stabfw.fixed_point import RetrainingMap

        s = cfg.loop.seed_list[0] if seed is None else seed
        if s not in maps:
            maps[s] = RetrainingMap(loop, cfg.loop, seed=s)
        return maps[s]

    solution = None
    if analysis.solve is not None:
        from stabfw.solvers import solve_fixed_point

        o = analysis.solve
        _log(f"fixed-point solve ({o.method})", progress)
        G = retraining_map(o.seed)
        solution = solve_fixed_point(G, G.theta_star, method=o.method, tol=o.tol, rtol=o.rtol,
                                     max_iter=o.max_iter, damping=o.damping)
        results["solve"] = solution.to_dict() | {
            "theta_star_residual": float(solution.residuals[0]),
            "distance_to_theta_star": float(_norm(solution.fixed_point - G.theta_star)),
            "seed": G.seed}

    jac_results: dict[str, Any] = {}
    if analysis.jacobian is not None:
        o = analysis.jacobian
        G = retraining_map(o.seed)
        at: Any = o.at
        if o.at == "fixed_point":  # solved once for every method
            if solution is None or (analysis.solve.seed or cfg.loop.seed_list[0]) != G.seed:
                from stabfw.solvers import solve_fixed_point

                _log("fixed-point solve (anderson) for the Jacobians", progress)
                solution = solve_fixed_point(G, G.theta_star, method="anderson", rtol=1e-8,
                                             max_iter=100)
            at = solution
        jac = {}
        for method in o.methods:
            _log(f"Jacobian by {method} at {o.at}", progress)
            an = _jacobian_analyzer(method, o.spectrum, o.k, o.tol, o.seed, o.bounds, o.options)
            res = an.analyze(loop, cfg.loop, at=at, retraining_map=G)
            jac_results[res.method] = res
            jac[res.method] = res.to_dict()
        results["jacobian"] = jac

    if analysis.lambda_curve is not None:
        _log("ρ(J) against λ", progress)
        results["lambda_curve"] = _lambda_curve(loop, cfg, analysis.lambda_curve, jac_results,
                                                maps)

    if analysis.critical_lambda is not None:
        from stabfw.critical import critical_lambda

        o = analysis.critical_lambda
        _log(f"critical λ ({o.criterion})", progress)
        an = (_jacobian_analyzer(o.method, k=2, bounds=False, options=o.options, norm=False)
              if o.criterion == "spectral_radius" else None)
        crit = critical_lambda(loop, cfg.loop, criterion=o.criterion, bracket=o.bracket,
                               max_lam=o.max_lam, tol=o.tol, n_replicates=o.n_replicates,
                               analyzer=an)
        results["critical_lambda"] = crit.to_dict()

    write = cfg.output.report if report is None else report
    if write and out is not None and results:
        from stabfw.report import plot_analysis

        lam = cfg.loop.lam
        plot_analysis(results, Path(out) / "analysis.png",
                      title=f"{cfg.domain.name}: {cfg.loop.policy}, λ = "
                            f"{'inf' if math.isinf(lam) else f'{lam:g}'}")
    return results


def _norm(x: Any) -> float:
    import numpy as np

    return float(np.linalg.norm(x))


def _lambda_curve(loop: Any, cfg: Any, o: LambdaCurveOptions, jac: dict[str, Any],
                  maps: dict[int, Any] | None = None) -> dict[str, Any]:
    import numpy as np

    from stabfw.fixed_point import RetrainingMap

    rhos, ses, methods = [], [], []
    seeds = cfg.loop.seed_list[:o.replicates]
    maps = {} if maps is None else maps
    for s in seeds:  # θ* fitted once per seed, whatever λ
        maps.setdefault(s, RetrainingMap(loop, cfg.loop, seed=s))
    base = {s: maps[s] for s in seeds}
    for lam in o.lams:
        c = cfg.loop.model_copy(update={"lam": float(lam)})
        vals = []
        for s in seeds:
            # only ρ is drawn: two eigenvalues (a ± or complex pair), no norm
            an = _jacobian_analyzer(o.method, k=2, seed=s, bounds=False, options=o.options,
                                    norm=False)
            G = base[s].with_lam(lam)
            at: Any = None
            if o.at == "fixed_point":
                from stabfw.solvers import solve_fixed_point

                at = solve_fixed_point(G, G.theta_star, method="anderson", rtol=1e-8,
                                       max_iter=100)
            res = an.analyze(loop, c, at=at, retraining_map=G)
            vals.append(res.spectral_radius)
            methods.append(res.method)
        rhos.append(float(np.mean(vals)))
        ses.append(float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None)
    out: dict[str, Any] = {"lams": list(o.lams), "spectral_radius": rhos, "stderr": ses,
                           "at": o.at,
                           "method": methods[0] if methods else o.method,
                           "exponential_family": [lam / (1 + lam) for lam in o.lams]}
    consts = o.constants
    source = "config"
    if consts is None:
        for r in jac.values():
            b = r.bounds or {}
            if b.get("alpha") is not None:
                consts = {"alpha": b["alpha"], "L": b["L"], "eps": b["eps"]}
                source = f"estimated ({r.method})"
                break
    if consts is None:
        from stabfw.differentiable import is_differentiable

        if is_differentiable(loop):
            from stabfw.bounds import estimate_constants

            G = maps[seeds[0]]
            consts = estimate_constants(loop, G.theta_star, G.real0)
            source = "estimated"
    if consts is not None:
        from stabfw.bounds import theorem1_condition, theorem1_rate

        grid = [float(x) for x in np.linspace(0, max(o.lams), 200)]
        rate = theorem1_rate(np.asarray(grid), consts["alpha"], consts["L"], consts["eps"])
        ok = [theorem1_condition(lam, consts["alpha"], consts["L"], consts["eps"]) for lam in grid]
        out["theorem1"] = {
            **{k: float(v) for k, v in consts.items()}, "source": source, "lam_grid": grid,
            "rate": [float(r) if c and math.isfinite(r) else None for r, c in zip(rate, ok)],
            "at_lams": [theorem1_rate(lam, consts["alpha"], consts["L"], consts["eps"])
                        if theorem1_condition(lam, consts["alpha"], consts["L"], consts["eps"])
                        else None for lam in o.lams],
        }
        # the theorem is a sufficient condition: it must never be below the measured ρ
        out["theorem1"]["consistent"] = all(
            b is None or b >= r for b, r in zip(out["theorem1"]["at_lams"], rhos))
    return out


# --- command line ---------------------------------------------------------------------------
def cmd_analyze(args: Any) -> int:
    """``stabfw analyze RUN_DIR``: run the analyzers on a finished run."""
    import json

    import yaml

    from stabfw.config import ConfigError, apply_overrides, parse_config
    from stabfw.trajectory import Trajectory, write_json

    run_dir = Path(args.run_dir)
    traj = Trajectory.load(run_dir)
    raw = dict(traj.config)
    if args.config:
        extra = yaml.safe_load(Path(args.config).read_text()) or {}
        if "analysis" not in extra:
            raise ConfigError(f"{args.config}: needs an 'analysis:' section")
        raw["analysis"] = extra["analysis"]
    raw = apply_overrides(raw, args.set)
    if raw.get("analysis") is None:
        raw["analysis"] = {"jacobian": True}
    cfg = parse_config(raw)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    results = analyze_run(traj, cfg, out=out, report=not args.no_report, progress=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else traj.summary()
    summary["analysis"] = results
    write_json(summary_path, summary)
    _print_summary(results)
    print(f"wrote {summary_path}" + ("" if args.no_report else f" and {out / 'analysis.png'}"))
    return 0


def _print_summary(results: dict[str, Any]) -> None:
    fp = results.get("fixed_point")
    if fp:
        print(f"fixed point: {fp['verdict']} — {fp['reason']}")
    for name, r in (results.get("jacobian") or {}).items():
        print(f"ρ(J) by {name}: {r['spectral_radius']:.4g} (norm {r['spectral_norm']}, "
              f"{r['n_matvecs']} applications, {r['wall_time']:.1f} s, residual "
              f"‖G(θ)−θ‖ = {r['residual']:.3g})")
        b = r.get("bounds") or {}
        if b.get("alpha") is not None:
            rate = b.get("rate")
            print(f"  Theorem 1: α={b['alpha']:.3g}, L={b['L']:.3g}, ε={b['eps']:.3g} → "
                  + (f"ρ ≤ {rate:.3g}" if not b["vacuous"] else "vacuous (condition fails)"))
    if results.get("solve"):
        s = results["solve"]
        print(f"fixed point by {s['method']}: {s['status']}, residual {s['residual']:.3g}, "
              f"{s['n_evaluations']} map evaluations")
    if results.get("critical_lambda"):
        c = results["critical_lambda"]
        print(f"critical λ: {c['lam_star']} ± {c['uncertainty']} ({c['status']})")


def register_cli(sub: Any) -> None:
    """Add the ``analyze`` subcommand to the ``stabfw`` parser."""
    p = sub.add_parser("analyze", help="run the fixed-point and Jacobian analyzers on a run")
    p.add_argument("run_dir", help="a finished run directory (from `stabfw run`)")
    p.add_argument("--config", help="a YAML file whose 'analysis:' section replaces the run's")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override, e.g. --set analysis.jacobian.methods=[dense,implicit]")
    p.add_argument("--out", help="where to write (default: the run directory)")
    p.add_argument("--no-report", action="store_true", help="skip analysis.png")
    p.set_defaults(func=cmd_analyze)
