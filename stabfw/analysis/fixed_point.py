"""The fixed-point analyzer: where a retraining loop goes, how fast, and a verdict.

:class:`FixedPointAnalyzer` reads a :class:`~stabfw.Trajectory` (or any metric series)
and reports the distance to θ* per generation, an empirical contraction rate with a
bootstrap confidence interval, the stationary error level and a verdict — ``converged``,
``stationary_noise``, ``collapsing``, ``diverging`` or ``oscillating`` — with the numbers
that decided it. :meth:`FixedPointAnalyzer.solve` finds the fixed point of the loop's
retraining map directly (:class:`RetrainingMap`, Picard or Anderson).

The contraction rate is the spectral radius of a first-order autoregression
``θ_{t+1} = c_s + J θ_t + noise`` fitted to all seeds at once with a per-seed intercept
(the fixed point of each seed's real data): a vector autoregression when θ is short, the
scalar coefficient of the pooled regression otherwise. The within estimator is biased by
O(1/T) on short noisy panels (Nickell 1981); the split-panel jackknife removes that term
and leaves deterministic (noise-free) trajectories exact.

References
----------
Nickell, "Biases in dynamic models with fixed effects", Econometrica 49(6), 1981.
Dhaene & Jochmans, "Split-panel jackknife estimation of fixed-effect models", Rev. Econ.
Stud. 82(3), 2015. Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993 (the
percentile interval, resampling seeds).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw.analysis.results import AnalysisResult
from stabfw.analysis.solvers import FixedPointSolution, solve_fixed_point
from stabfw.run.analysis_config import SolveOptions
from stabfw.run.retraining_map import RetrainingMap

__all__ = ["VERDICTS", "FixedPointAnalyzer", "FixedPointResult", "solve_from_theta_star"]

VERDICTS = ("converged", "stationary_noise", "collapsing", "diverging", "oscillating",
            "inconclusive")
Verdict = Literal["converged", "stationary_noise", "collapsing", "diverging", "oscillating",
                  "inconclusive"]


# --- trajectory analysis ------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPointResult(AnalysisResult):
    """What a loop's trajectory does, with the numbers behind the verdict.

    Attributes
    ----------
    verdict : {"converged", "stationary_noise", "collapsing", "diverging", "oscillating"}
    reason : str
        One sentence with the numbers that decided the verdict.
    rate : float
        Empirical contraction rate: spectral radius of the fitted autoregression.
    rate_ci : (float, float)
        Its confidence interval (bootstrap over seeds, or the regression's standard error
        with fewer than five seeds).
    eigenvalue : complex
        The dominant eigenvalue of the fitted autoregression (its sign and angle tell
        oscillation).
    stationary_level : float
        RMS distance to the start over the last third of the generations.
    distance_mean, distance_std, distance_q10, distance_q90 : numpy.ndarray
        Distance to θ* (generation 0) per generation, over seeds.
    step_rms : numpy.ndarray
        RMS over seeds of ‖θ_t − θ_{t−1}‖, t = 1..T.
    evidence : dict
        Every statistic the verdict rules looked at.
    """

    verdict: Verdict
    reason: str
    rate: float
    rate_ci: tuple[float, float]
    eigenvalue: complex
    stationary_level: float
    distance_mean: np.ndarray
    distance_std: np.ndarray
    distance_q10: np.ndarray
    distance_q90: np.ndarray
    step_rms: np.ndarray
    n_seeds: int
    generations: int
    dim: int
    series: str = "theta"
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return self._plain({
            "series": self.series,
            "verdict": self.verdict,
            "reason": self.reason,
            "rate": self.rate,
            "rate_ci": list(self.rate_ci),
            "eigenvalue": self.eigenvalue,
            "stationary_level": self.stationary_level,
            "n_seeds": self.n_seeds,
            "generations": self.generations,
            "dim": self.dim,
            "distance_mean": self.distance_mean,
            "distance_std": self.distance_std,
            "distance_q10": self.distance_q10,
            "distance_q90": self.distance_q90,
            "step_rms": self.step_rms,
            "evidence": self.evidence,
        })


def _within(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed demeaned regressor and response of an AR(1): X is (S, T, d)."""
    Z, Y = X[:, :-1, :], X[:, 1:, :]
    Z = Z - Z.mean(axis=1, keepdims=True)
    Y = Y - Y.mean(axis=1, keepdims=True)
    d = X.shape[-1]
    return Z.reshape(-1, d), Y.reshape(-1, d)


def _ar_fit(X: np.ndarray, vector: bool) -> tuple[complex, float]:
    """Dominant eigenvalue of the pooled within-AR(1) fit and the scalar standard error."""
    Z, Y = _within(X)
    zz = float(np.sum(Z * Z))
    if zz <= 0 or not np.isfinite(zz):
        return complex(math.nan), math.nan
    if vector:
        G = Z.T @ Z
        J = np.linalg.lstsq(G, Z.T @ Y, rcond=None)[0].T
        ev = np.linalg.eigvals(J)
        lead = complex(ev[np.argmax(np.abs(ev))])
    else:
        lead = complex(float(np.sum(Z * Y)) / zz)
    rho_s = float(np.sum(Z * Y)) / zz
    resid = Y - rho_s * Z
    dof = max(Z.size - X.shape[0] * X.shape[-1] - 1, 1)
    se = math.sqrt(float(np.sum(resid * resid)) / dof / zz)
    return lead, se


def _jackknife(X: np.ndarray, vector: bool) -> tuple[complex, float]:
    """Split-panel jackknife of :func:`_ar_fit` (removes the O(1/T) Nickell bias)."""
    full, se = _ar_fit(X, vector)
    T = X.shape[1] - 1  # transitions
    if T < 8 or not np.isfinite(abs(full)):
        return full, se
    h = T // 2  # two halves of h transitions each, sharing the middle point when T is even
    a, _ = _ar_fit(X[:, :h + 1], vector)
    b, _ = _ar_fit(X[:, T - h:], vector)
    if not (np.isfinite(abs(a)) and np.isfinite(abs(b))):
        return full, se
    return 2 * full - 0.5 * (a + b), se


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return math.nan, math.nan
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        return math.nan, math.nan
    b = float(xc @ (y - y.mean())) / sxx
    r = y - y.mean() - b * xc
    se = math.sqrt(float(r @ r) / max(x.size - 2, 1) / sxx)
    return b, se


class FixedPointAnalyzer:
    """Analyse where a retraining loop goes, and find its fixed point.

    Parameters
    ----------
    confidence : float
        Level of the rate's confidence interval.
    n_bootstrap : int
        Bootstrap resamples of the seeds for that interval.
    burn_in : int
        Generations to skip at the start of the rate fit.
    max_var_dim : int
        Fit a vector autoregression when θ has at most this many entries (and there are
        ten observations per entry); otherwise the scalar pooled coefficient.
    atol, rtol : float
        A step or distance below ``atol + rtol·‖θ*‖`` counts as zero (a converged,
        noise-free loop).
    random_state : int
        Seed of the bootstrap.

    Examples
    --------
    >>> fp = FixedPointAnalyzer().analyze(traj)            # doctest: +SKIP
    >>> fp.verdict, fp.rate                                 # doctest: +SKIP
    ('stationary_noise', 0.50)
    """

    def __init__(self, confidence: float = 0.9, n_bootstrap: int = 200, burn_in: int = 0,
                 max_var_dim: int = 20, atol: float = 1e-12, rtol: float = 1e-8,
                 random_state: int = 0):
        self.confidence = confidence
        self.n_bootstrap = n_bootstrap
        self.burn_in = burn_in
        self.max_var_dim = max_var_dim
        self.atol = atol
        self.rtol = rtol
        self.random_state = random_state

    # --- trajectories -------------------------------------------------------------------
    def analyze(self, traj: Any, metric: str | None = None) -> FixedPointResult:
        """Analyse a trajectory's θ (or one of its metrics, e.g. a variance or an FID).

        Parameters
        ----------
        traj : Trajectory or array
            A :class:`~stabfw.Trajectory`, or an array of shape ``(seeds, generations + 1,
            d)`` or ``(seeds, generations + 1)``.
        metric : str, optional
            Analyse ``traj.metric(metric)`` instead of θ.
        """
        if metric is not None:
            return self.analyze_series(traj.metric(metric), name=metric)
        X = traj.params if hasattr(traj, "params") else np.asarray(traj, dtype=float)
        X = np.asarray(X, dtype=float)
        if X.ndim == 2:
            X = X[..., None]
        if X.ndim != 3 or X.shape[1] < 3:
            raise ValueError(f"need an array (seeds, generations + 1 ≥ 3, d); got shape {X.shape}")
        return self._analyze(X, "theta", positive=False)

    def analyze_series(self, values: Any, name: str = "metric") -> FixedPointResult:
        """Analyse a scalar series per seed, shape ``(seeds, generations + 1)``.

        Besides the rules for θ, a positive series that decays towards zero (a variance,
        a diversity score) is ``collapsing``.
        """
        V = np.asarray(values, dtype=float)
        if V.ndim == 1:
            V = V[None, :]
        if V.ndim != 2 or V.shape[1] < 3:
            raise ValueError(f"need an array (seeds, generations + 1 ≥ 3); got shape {V.shape}")
        return self._analyze(V[..., None], name, positive=bool(np.nanmin(V) > 0))

    def _analyze(self, X: np.ndarray, series: str, positive: bool) -> FixedPointResult:
        S, T1, d = X.shape
        T = T1 - 1
        dist = np.linalg.norm(X - X[:, :1, :], axis=-1)
        finite = bool(np.all(np.isfinite(X)))
        with np.errstate(all="ignore"):
            dmean, dstd = np.nanmean(dist, axis=0), np.nanstd(dist, axis=0)
            q10, q90 = np.nanquantile(dist, 0.1, axis=0), np.nanquantile(dist, 0.9, axis=0)
            steps = np.linalg.norm(np.diff(X, axis=1), axis=-1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                step_rms = np.sqrt(np.nanmean(steps**2, axis=0))
            drms = np.sqrt(np.nanmean(dist**2, axis=0))
        scale = float(np.sqrt(np.nanmean(np.sum(X[:, 0, :] ** 2, axis=-1))))
        floor = self.atol + self.rtol * max(scale, 1e-300)
        last = max(T // 3, 1)
        level = float(np.sqrt(np.nanmean(dist[:, -last:] ** 2))) if finite else math.inf
        ev: dict[str, Any] = {"n_seeds": S, "generations": T, "dim": d, "scale": scale,
                              "zero_floor": floor}

        def result(verdict: Verdict, reason: str, rate=math.nan, ci=(math.nan, math.nan),
                   eig=complex(math.nan)) -> FixedPointResult:
            return FixedPointResult(verdict, reason, float(rate), (float(ci[0]), float(ci[1])),
                                    complex(eig), level, dmean, dstd, q10, q90, step_rms, S, T, d,
                                    series, ev)

        if not finite:
            bad = int(np.argmax(~np.all(np.isfinite(X), axis=(0, 2))))
            ev["first_nonfinite_generation"] = bad
            return result("diverging", f"values become non-finite at generation {bad}")
        if float(np.max(dist)) <= floor:
            ev["max_distance"] = float(np.max(dist))
            return result("converged", f"θ never leaves θ* (max distance {np.max(dist):.2e} ≤ "
                          f"{floor:.1e})", 0.0, (0.0, 0.0), 0.0)

        # the rate: AR(1) on the part of the series whose steps are above the zero floor
        moving = np.nonzero(step_rms > 100 * floor)[0]
        t_end = int(moving[-1]) + 2 if moving.size else 2
        t_end = max(t_end, min(T1, 3 + self.burn_in))
        Xr = X[:, self.burn_in:t_end, :]
        vector = d <= self.max_var_dim and S * (Xr.shape[1] - 1) >= 10 * d
        eig, se = _jackknife(Xr, vector) if Xr.shape[1] >= 3 else (complex(math.nan), math.nan)
        rate = abs(eig)
        ci = self._rate_ci(Xr, vector, rate, se)
        ev.update({"rate_fit": "VAR(1)" if vector else "pooled AR(1)", "rate_fit_generations":
                   [self.burn_in, t_end - 1], "rate_se": se})

        # trends over the second half
        h = T // 2
        t_idx = np.arange(1, T + 1)
        with np.errstate(divide="ignore"):
            s_slope, s_se = _slope(t_idx[h:].astype(float), np.log(step_rms[h:]))
            g_slope, _ = _slope(np.log(t_idx[h:].astype(float)), np.log(drms[1:][h:]))
        step_decay = bool(np.isfinite(s_slope) and s_slope + 2 * s_se < 0
                          and step_rms[-1] < 0.5 * step_rms[h])
        growth = float(drms[-1] / drms[max(h, 1)]) if drms[max(h, 1)] > 0 else math.inf
        growing = bool(growth >= 1.25 and np.isfinite(g_slope) and g_slope > 0.25)
        ev.update({"step_log_slope": s_slope, "step_log_slope_se": s_se, "step_decay": step_decay,
                   "distance_growth_second_half": growth, "distance_loglog_slope": g_slope,
                   "final_step": float(step_rms[-1]), "distance_gen1": float(drms[1]),
                   "distance_final": float(drms[-1])})
        angle = abs(math.atan2(eig.imag, eig.real)) if np.isfinite(rate) else 0.0
        ev["eigenvalue_angle"] = angle

        if positive:
            v0 = float(np.nanmedian(X[:, 0, 0]))
            vt = float(np.nanmedian(X[:, -1, 0]))
            lslope, lse = _slope(t_idx[h:].astype(float),
                                 np.log(np.nanmedian(X[:, 1:, 0], axis=0))[h:])
            ev.update({"final_over_initial": vt / v0, "log_slope": lslope})
            if vt < 0.1 * v0 and np.isfinite(lslope) and lslope + 2 * lse < 0:
                return result("collapsing", f"{series} falls to {vt / v0:.2g} of its initial "
                              f"value and keeps falling (log-slope {lslope:.3g}/generation)",
                              rate, ci, eig)
        if step_rms[-1] <= 100 * floor:
            return result("converged", f"steps shrink to {step_rms[-1]:.1e} (≤ 100×{floor:.0e});"
                          f" settles {drms[-1]:.3g} from θ* at rate {rate:.3g}", rate, ci, eig)
        if ci[0] > 1.0 or (growing and ci[1] >= 0.98):
            return result("diverging", f"distance grows ×{growth:.2f} over the second half "
                          f"(log-log slope {g_slope:.2f}), rate {rate:.3g} "
                          f"[{ci[0]:.3g}, {ci[1]:.3g}]", rate, ci, eig)
        if np.isfinite(rate) and rate >= 0.5 and (eig.real < 0 or angle >= math.pi / 3):
            return result("oscillating", f"dominant eigenvalue {eig.real:.3g}{eig.imag:+.3g}i "
                          f"(modulus {rate:.3g}, angle {math.degrees(angle):.0f}°)", rate, ci, eig)
        if step_decay and drms[-1] > 2 * drms[1]:
            return result("collapsing", f"steps keep shrinking (log-slope {s_slope:.3g}/generation)"
                          f" while θ drifts to {drms[-1] / drms[1]:.3g}× its first-generation "
                          "distance from θ*", rate, ci, eig)
        if ci[1] < 1.0:
            return result("stationary_noise", f"mean-reverting at rate {rate:.3g} "
                          f"[{ci[0]:.3g}, {ci[1]:.3g}] to a noise level of {level:.3g}",
                          rate, ci, eig)
        return result("diverging", f"no contraction: rate {rate:.3g} [{ci[0]:.3g}, {ci[1]:.3g}], "
                      f"distance ×{growth:.2f} over the second half", rate, ci, eig)

    def _rate_ci(self, X: np.ndarray, vector: bool, rate: float, se: float) -> tuple[float, float]:
        if not np.isfinite(rate):
            return (math.nan, math.nan)
        alpha = 1 - self.confidence
        S = X.shape[0]
        if S < 5 or self.n_bootstrap < 10:
            from scipy.stats import norm

            z = float(norm.ppf(1 - alpha / 2))
            return (rate - z * se, rate + z * se)
        rng = np.random.default_rng(self.random_state)
        boots = []
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, S, S)
            e, _ = _jackknife(X[idx], vector)
            if np.isfinite(abs(e)):
                boots.append(abs(e))
        if len(boots) < 10:
            return (math.nan, math.nan)
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        return (float(lo), float(hi))

    # --- solving --------------------------------------------------------------------------
    def solve(self, loop: Any, config: Any, method: str = "anderson", x0: Any | None = None,
              seed: int | None = None, **options: Any) -> FixedPointSolution:
        """Find the fixed point of the loop's retraining map (common random numbers).

        Parameters
        ----------
        loop : SelfConsumingLoop
            Must be able to take θ back (``capabilities().with_theta``).
        config : RetrainConfig or dict
        method : {"picard", "anderson"}
        x0 : array, optional
            Starting point (default θ*).
        seed : int, optional
            The replicate whose streams define the map (default: the config's first seed).
        **options
            Fields of :class:`~stabfw.run.analysis_config.SolveOptions` (``tol``, ``rtol``,
            ``max_iter``, ``damping``, ``memory``).

        Returns
        -------
        FixedPointSolution
            ``info`` adds ``theta_star_residual`` (‖G(θ*) − θ*‖) and
            ``distance_to_theta_star``.
        """
        G = RetrainingMap(loop, config, seed=seed)
        return solve_from_theta_star(G, SolveOptions(method=method, **options), x0=x0)


def solve_from_theta_star(G: RetrainingMap, options: SolveOptions | None = None,
                          x0: Any | None = None) -> FixedPointSolution:
    """The fixed point of a retraining map, solved from θ* (or ``x0``): the one place
    every analyzer solves for it, with the defaults of
    :class:`~stabfw.run.analysis_config.SolveOptions`.

    ``info`` adds ``theta_star_residual`` (‖G(θ*) − θ*‖), ``distance_to_theta_star`` and
    the replicate's ``seed``.
    """
    G.require_autonomous("the fixed-point solve")
    o = options or SolveOptions()
    theta_star = G.theta_star
    start = theta_star if x0 is None else np.asarray(x0, dtype=float)
    sol = solve_fixed_point(G, start, method=o.method, **o.solver_kwargs())
    res0 = sol.residuals[0] if x0 is None and sol.residuals.size else G.residual(theta_star)
    info = {**sol.info, "theta_star_residual": float(res0),
            "distance_to_theta_star": float(np.linalg.norm(sol.fixed_point - theta_star)),
            "seed": G.seed}
    return FixedPointSolution(sol.fixed_point, sol.status, sol.residuals, sol.n_evaluations,
                              sol.method, sol.residual, sol.tol, sol.wall_time, info)
