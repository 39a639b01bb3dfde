"""Run the analyzers a config's ``analysis:`` section selects (no plotting, no files).

``stabfw run`` calls :func:`analyze_run` after the loop and stores every result under
``analysis`` in ``summary.json``; ``stabfw analyze RUN_DIR`` calls it on a finished run.
The section's schema is :class:`stabfw.run.analysis_config.AnalysisConfig`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from stabfw.analysis.bounds import estimate_constants, theorem1_curve
from stabfw.analysis.critical import critical_lambda, spectral_radius_scan
from stabfw.analysis.fixed_point import FixedPointAnalyzer
from stabfw.analysis.headline import run_headline, theory_for
from stabfw.analysis.jacobian import JacobianAnalyzer
from stabfw.analysis.jacobian.analyzer import solve_map
from stabfw.run.analysis_config import (
    METHOD_OPTIONS,
    AnalysisConfig,
    JacobianOptions,
    LambdaCurveOptions,
    SolveOptions,
)
from stabfw.run.config import RunConfig, parse_config
from stabfw.run.registry import make
from stabfw.run.retraining_map import RetrainingMap
from stabfw.run.trajectory import Trajectory

__all__ = ["analyze_run"]


class _Log:
    """Progress of the analyzers: one line per analyzer on stderr with the seconds since
    the first, and a bar of its retraining-map evaluations (refits) while it runs."""

    def __init__(self, enabled: bool):
        self.enabled, self.t0 = enabled, time.perf_counter()
        self._bar: Any = None
        self._stop: threading.Event | None = None

    def __call__(self, msg: str) -> None:
        self.close()
        if not self.enabled:
            return
        print(f"[stabfw analyze {time.perf_counter() - self.t0:7.1f} s] {msg}",
              file=sys.stderr, flush=True)
        from tqdm.auto import tqdm

        self._bar = bar = tqdm(desc=f"  {msg}", unit="refit", leave=False, file=sys.stderr)
        start, self._stop = RetrainingMap.evaluations_in_process, threading.Event()

        def follow(stop: threading.Event) -> None:  # the analyzers run in this thread's parent
            while not stop.wait(0.5):
                bar.n = RetrainingMap.evaluations_in_process - start
                bar.refresh()

        threading.Thread(target=follow, args=(self._stop,), daemon=True).start()

    def close(self) -> None:
        """End the current analyzer's bar."""
        if self._stop is not None:
            self._stop.set()
            self._bar.close()
            self._stop = self._bar = None


class _Results(dict):
    """The results so far; each one handed to ``on_result`` as soon as it is stored."""

    def __init__(self, on_result: Callable[[str, Any], None] | None):
        super().__init__()
        self.on_result = on_result

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if self.on_result is not None:
            self.on_result(key, value)


def analyze_run(
    source: Any,
    cfg: Any | None = None,
    analysis: AnalysisConfig | dict[str, Any] | None = None,
    progress: bool = False,
    on_result: Callable[[str, Any], None] | None = None,
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
    progress : bool
        Print one line per analyzer to stderr, and a bar of its refits while it runs.
    on_result : callable, optional
        ``on_result(name, result)`` as soon as each analyzer finishes (``stabfw run``
        writes ``analysis/<name>.json`` with it, so a long analysis loses nothing).

    Returns
    -------
    dict
        ``fixed_point``, ``fixed_point_metrics``, ``jacobian`` (per method), ``solve``,
        ``lambda_curve``, ``critical_lambda`` — whichever ran — and ``headline``
        (:func:`stabfw.analysis.headline.run_headline`).
    """
    traj = source if isinstance(source, Trajectory) else Trajectory.load(source)
    if cfg is None:
        cfg = parse_config(traj.config)
    elif not isinstance(cfg, RunConfig):
        cfg = parse_config(cfg)
    if analysis is None:
        analysis = cfg.analysis or AnalysisConfig(jacobian=JacobianOptions())
    elif not isinstance(analysis, AnalysisConfig):
        analysis = AnalysisConfig.model_validate(analysis)
    log = _Log(progress)
    try:
        results = _analyze(traj, cfg, analysis, log, on_result)
    finally:
        log.close()
    if analysis.headline is not None:
        results["headline"] = run_headline(results, cfg.loop.lam,
                                           **headline_options(analysis.headline, cfg))
    return dict(results)


def headline_options(o: Any, cfg: RunConfig) -> dict[str, Any]:
    """``theory`` and ``constants`` of :func:`~stabfw.analysis.headline.run_headline` from
    an ``analysis.headline`` section (``theory: auto`` resolved for the run's domain)."""
    theory = (theory_for(cfg.domain.name, cfg.loop.policy) if o.theory == "auto"
              else (None if o.theory == "none" else o.theory))
    consts = o.constants
    if consts is None and cfg.analysis is not None and cfg.analysis.lambda_curve is not None:
        consts = cfg.analysis.lambda_curve.constants
    return {"theory": theory, "constants": consts}


def _analyze(traj: Trajectory, cfg: RunConfig, analysis: AnalysisConfig, log: _Log,
             on_result: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = _Results(on_result)

    if analysis.fixed_point is not None:
        o = analysis.fixed_point
        fpa = FixedPointAnalyzer(confidence=o.confidence, burn_in=o.burn_in,
                                 n_bootstrap=o.n_bootstrap)
        log("fixed-point analyzer on θ")
        info = traj.meta.get("metric_info")
        if info is None:  # a run saved before metric kinds were recorded: ask the domain
            info = {k: v.to_dict() for k, v in
                    make(cfg.domain.name, **cfg.domain.params).metric_info().items()}
        results["fixed_point"] = fpa.analyze(traj, metric_info=info).to_dict()
        if o.metrics:
            results["fixed_point_metrics"] = {
                m: fpa.analyze(traj, metric=m, metric_info=info).to_dict() for m in o.metrics}

    need_loop = any(getattr(analysis, k) is not None
                    for k in ("jacobian", "solve", "lambda_curve", "critical_lambda"))
    if not need_loop:
        return results
    loop = make(cfg.domain.name, **cfg.domain.params)
    maps: dict[int, RetrainingMap] = {}

    def retraining_map(seed: int | None) -> RetrainingMap:
        """One map per replicate, shared by the analyzers: θ* is fitted once."""
        s = cfg.loop.seed_list[0] if seed is None else seed
        if s not in maps:
            maps[s] = RetrainingMap(loop, cfg.loop, seed=s)
        return maps[s]

    solution = None
    if analysis.solve is not None:
        log(f"fixed-point solve ({analysis.solve.method})")
        solution = solve_map(retraining_map(analysis.solve.seed), analysis.solve)
        results["solve"] = solution.to_dict()

    jac_results: dict[str, Any] = {}
    if analysis.jacobian is not None:
        o = analysis.jacobian
        G = retraining_map(o.seed)
        at: Any = o.at
        if o.at == "fixed_point":  # solved once for every method
            if solution is None or solution.info.get("seed") != G.seed:
                solve = analysis.solve or SolveOptions()
                log(f"fixed-point solve ({solve.method}) for the Jacobians")
                solution = solve_map(G, solve)
            at = solution
        jac = {}
        for method in o.methods:
            log(f"Jacobian by {method} at {o.at}")
            kw = {"seeds": o.seeds} if o.seeds > 1 else {}
            an = JacobianAnalyzer(method=method, spectrum=o.spectrum, k=o.k, tol=o.tol,
                                  seed=o.seed, bounds=o.bounds, options=_for(method, o.options),
                                  solve=analysis.solve, **kw)
            res = an.analyze(loop, cfg.loop, at=at, retraining_map=G, maps=maps)
            if res.status != "ok":
                log(f"  {res.method}: {res.status} — {res.status_reason}")
            jac_results[res.method] = res
            jac[res.method] = res.to_dict()
            results["jacobian"] = jac  # stored (and written) after each method

    if analysis.lambda_curve is not None:
        log("ρ(J) against λ")
        results["lambda_curve"] = _lambda_curve(loop, cfg, analysis.lambda_curve, jac_results,
                                                maps, analysis.solve)

    if analysis.critical_lambda is not None:
        o = analysis.critical_lambda
        log(f"critical λ ({o.criterion})")
        an = (JacobianAnalyzer(method=o.method, k=2, bounds=False, norm=False,
                               options=_for(o.method, o.options), solve=analysis.solve)
              if o.criterion == "spectral_radius" else None)
        crit = critical_lambda(loop, cfg.loop, criterion=o.criterion, bracket=o.bracket,
                               max_lam=o.max_lam, tol=o.tol, n_replicates=o.n_replicates,
                               analyzer=an)
        results["critical_lambda"] = crit.to_dict()
    return results


def _for(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of a config section that apply to ``method`` (a section may list
    options of several methods)."""
    if method == "auto":
        return dict(options)
    return {k: v for k, v in options.items() if k in METHOD_OPTIONS[method].model_fields}


def _lambda_curve(loop: Any, cfg: Any, o: LambdaCurveOptions, jac: dict[str, Any],
                  maps: dict[int, RetrainingMap], solve: SolveOptions | None) -> dict[str, Any]:
    seeds = cfg.loop.seed_list[:o.replicates]
    # only ρ is drawn: two eigenvalues (a ± or complex pair), no norm
    an = JacobianAnalyzer(method=o.method, k=2, bounds=False, norm=False,
                          options=_for(o.method, o.options), solve=solve)
    scan = spectral_radius_scan(loop, cfg.loop, o.lams, seeds, an, at=o.at, maps=maps)
    rhos = [p["rho"] for p in scan]
    out: dict[str, Any] = {
        "lams": list(o.lams), "spectral_radius": rhos,
        "stderr": [p["rho_se"] if len(seeds) > 1 else None for p in scan],
        "ci": [p["rho_ci"] for p in scan], "status": [p["status"] for p in scan],
        "status_reason": [p["status_reason"] for p in scan],
        "at": (scan[0]["at"] if len({p["at"] for p in scan}) == 1 else "mixed"),
        "at_per_lam": [p["at"] for p in scan], "at_requested": o.at,
        "method": scan[0]["method"] if scan else o.method,
        "exponential_family": [lam / (1 + lam) for lam in o.lams]}
    consts, source = o.constants, "config"
    if consts is None:
        for r in jac.values():
            b = r.bounds or {}
            if b.get("alpha") is not None:
                consts = {"alpha": b["alpha"], "L": b["L"], "eps": b["eps"]}
                source = f"estimated ({r.method})"
                break
    if consts is None and loop.capabilities().differentiable:
        G = maps[seeds[0]]
        consts, source = estimate_constants(loop, G.theta_star, G.real0), "estimated"
    if consts is not None:
        out["theorem1"] = {**theorem1_curve(o.lams, consts["alpha"], consts["L"], consts["eps"],
                                            measured=rhos), "source": source}
    return out

