"""The fixed-point analyzer: where a retraining loop goes, how fast, and a verdict.

:class:`FixedPointAnalyzer` reads a :class:`~stabfw.Trajectory` (or any panel of θ or of a
metric, recorded by stabfw or elsewhere) and reports, relative to the loop's **own limit**
θ̂_∞ (which need not be θ*):

* ``burn_in`` — the generations before the loop settles, chosen from the data;
* ``limit`` θ̂_∞ with a seed-bootstrap interval, and its distance from θ*;
* ``level`` — the stationary RMS distance to θ̂_∞, with an interval;
* ``rate`` — the contraction rate of a bias-corrected panel VAR(1)/AR(1)
  (:mod:`stabfw.analysis.panel`), with a seed-bootstrap interval and standard error;
* ``collapsing_metrics`` — each declared *diversity* metric's trend towards zero;
* ``verdict`` — converged / stationary_noise / collapsing / diverging / oscillating /
  inconclusive, by the evidence rules of ``docs/analysis.md`` (repeated in
  :meth:`FixedPointAnalyzer.analyze`), and ``verdict_reason`` with the numbers that decided.

:meth:`FixedPointAnalyzer.solve` finds the fixed point of the loop's retraining map directly
(:class:`RetrainingMap`, Picard or Anderson) and says whether it attracts.

References
----------
Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993 (percentile intervals,
resampling seeds). Nickell, Econometrica 49(6), 1981 and Han & Phillips, Econometric
Theory 26(1), 2010 (the rate; see :mod:`stabfw.analysis.panel`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw.analysis.panel import panel_rate
from stabfw.analysis.results import AnalysisResult
from stabfw.analysis.solvers import FixedPointSolution, solve_fixed_point
from stabfw.run.analysis_config import SolveOptions
from stabfw.run.retraining_map import RetrainingMap

__all__ = ["ACCUMULATING_POLICIES", "VERDICTS", "FixedPointAnalyzer", "FixedPointResult",
           "solve_from_theta_star"]

VERDICTS = ("converged", "stationary_noise", "collapsing", "diverging", "oscillating",
            "inconclusive")
Verdict = Literal["converged", "stationary_noise", "collapsing", "diverging", "oscillating",
                  "inconclusive"]
#: Policies whose training set grows with every generation: θ_{t+1} depends on all past
#: generations, so a first-order autoregression's coefficient is not their rate.
ACCUMULATING_POLICIES = ("accumulate", "accumulate_subsample")

#: Evidence thresholds (documented in docs/analysis.md).
MIN_GENERATIONS = 4          # fewer: inconclusive
MIN_OBSERVATIONS = 20        # seeds × generations; fewer: inconclusive
CONVERGED_FRACTION = 0.05    # level (upper CI) ≤ this × initial distance: converged
COLLAPSE_RATIO = 0.5         # a diversity metric's median must fall below this × its start
MIN_UNITS = 10               # bootstrap units (seeds, else blocks of generations)


# --- trajectory analysis ------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPointResult(AnalysisResult):
    """What a loop's trajectory does, with the numbers behind the verdict.

    Every distance is a Euclidean norm in the units of θ (or of the analysed metric).

    Attributes
    ----------
    verdict : {"converged", "stationary_noise", "collapsing", "diverging", "oscillating", \
"inconclusive"}
    verdict_reason : str
        One sentence with the numbers that decided the verdict (alias ``reason``).
    rate, rate_ci, rate_se : float, (float, float), float
        Contraction rate towards the limit (spectral radius of the bias-corrected panel
        VAR(1)/AR(1)), its percentile interval and standard error (bootstrap over seeds).
        NaN, with ``rate_note``, for accumulating policies and where it cannot be measured.
    eigenvalue : complex
        Dominant eigenvalue of the fitted autoregression.
    burn_in : int
        First generation of the stationary window (chosen from the data unless given).
    limit, limit_ci : numpy.ndarray, (numpy.ndarray, numpy.ndarray)
        θ̂_∞: the mean of θ over seeds and the stationary window, and its interval.
    limit_distance_to_theta_star : float
        ‖θ̂_∞ − θ̄*‖, θ̄* the mean over seeds of θ at generation 0 (θ*).
    level, level_ci : float, (float, float)
        Stationary RMS distance ‖θ_t − θ̂_∞‖ over seeds and the window, and its interval.
    initial_distance : float
        RMS distance of generation 0 from θ̂_∞.
    stationary_level : float
        RMS distance to each seed's θ* over the window (the old reference point).
    collapsing_metrics : dict
        Per declared diversity metric: ratio of its final to initial median, the mean
        per-seed slope of its log over the second half with an interval, and ``collapsing``.
    distance_mean, distance_std, distance_q10, distance_q90 : numpy.ndarray
        Distance to θ* (generation 0) per generation, over seeds.
    step_rms : numpy.ndarray
        RMS over seeds of ‖θ_t − θ_{t−1}‖, t = 1..T.
    evidence : dict
        Every statistic the verdict rules looked at.
    """

    verdict: Verdict
    verdict_reason: str
    rate: float
    rate_ci: tuple[float, float]
    rate_se: float
    eigenvalue: complex
    burn_in: int
    limit: np.ndarray
    limit_ci: tuple[np.ndarray, np.ndarray]
    limit_distance_to_theta_star: float
    level: float
    level_ci: tuple[float, float]
    initial_distance: float
    stationary_level: float
    collapsing_metrics: dict[str, Any]
    distance_mean: np.ndarray
    distance_std: np.ndarray
    distance_q10: np.ndarray
    distance_q90: np.ndarray
    step_rms: np.ndarray
    n_seeds: int
    generations: int
    dim: int
    series: str = "theta"
    confidence: float = 0.9
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """Alias of :attr:`verdict_reason`."""
        return self.verdict_reason

    @property
    def stable(self) -> bool | None:
        """True for converged / stationary_noise, False for the unstable verdicts, None
        when inconclusive."""
        if self.verdict == "inconclusive":
            return None
        return self.verdict in ("converged", "stationary_noise")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        short = self.limit.size <= 50
        return self._plain({
            "series": self.series,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "reason": self.verdict_reason,
            "stable": self.stable,
            "rate": self.rate,
            "rate_ci": list(self.rate_ci),
            "rate_se": self.rate_se,
            "confidence": self.confidence,
            "eigenvalue": self.eigenvalue,
            "burn_in": self.burn_in,
            "limit": self.limit if short else None,
            "limit_ci": [self.limit_ci[0], self.limit_ci[1]] if short else None,
            "limit_distance_to_theta_star": self.limit_distance_to_theta_star,
            "level": self.level,
            "level_ci": list(self.level_ci),
            "initial_distance": self.initial_distance,
            "stationary_level": self.stationary_level,
            "collapsing_metrics": self.collapsing_metrics,
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


def _unit_slopes(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``y`` on ``t`` (NaN-aware)."""
    ok = np.isfinite(y)
    w = ok.astype(float)
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm = (w * t).sum(1) / n
        ym = np.where(ok, y, 0).sum(1) / n
        tc = (t[None, :] - tm[:, None]) * w
        sxx = (tc * tc).sum(1)
        return np.where((n >= 3) & (sxx > 0),
                        (tc * (np.where(ok, y, 0) - ym[:, None])).sum(1) / sxx, np.nan)


def _mean_ci(v: np.ndarray, z: float) -> tuple[float, float, float]:
    """Mean of independent unit values with its normal interval (NaN with < 2 units)."""
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (float(v.mean()) if v.size else math.nan), math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    return m, m - z * se, m + z * se


def _trend(y: np.ndarray, t: np.ndarray, z: float) -> tuple[float, float, float]:
    """Slope of ``y`` (units × times) on ``t``: mean of per-unit slopes with its interval
    over units; with one unit, the time regression's own interval."""
    if y.shape[0] >= 2:
        return _mean_ci(_unit_slopes(y, t), z)
    yy, ok = y[0], np.isfinite(y[0])
    if ok.sum() < 4:
        return math.nan, math.nan, math.nan
    tt, yy = t[ok], yy[ok]
    tc = tt - tt.mean()
    b = float(tc @ (yy - yy.mean()) / (tc @ tc))
    r = yy - yy.mean() - b * tc
    se = math.sqrt(float(r @ r) / max(tt.size - 2, 1) / float(tc @ tc))
    return b, b - z * se, b + z * se


class FixedPointAnalyzer:
    """Analyse where a retraining loop goes, and find its fixed point.

    Parameters
    ----------
    confidence : float
        Level of every interval (rate, limit, level, trends).
    n_bootstrap : int
        Bootstrap resamples of the seeds.
    burn_in : int, optional
        First generation of the stationary window; default chosen from the data (the
        first generation from which the seed-average stays within three standard errors of
        the last third's mean, at most 2T/3).
    max_var_dim : int
        Fit a full VAR(1) when θ has at most this many entries; otherwise one rate common
        to all coordinates.
    atol, rtol : float
        A step or distance below ``atol + rtol·‖θ*‖`` counts as zero (a converged,
        noise-free loop).
    random_state : int
        Seed of the bootstrap.

    Examples
    --------
    >>> fp = FixedPointAnalyzer().analyze(traj)            # doctest: +SKIP
    >>> fp.verdict, fp.rate, fp.rate_ci                     # doctest: +SKIP
    ('stationary_noise', 0.50, (0.48, 0.52))
    """

    def __init__(self, confidence: float = 0.9, n_bootstrap: int = 400,
                 burn_in: int | None = None, max_var_dim: int = 10, atol: float = 1e-12,
                 rtol: float = 1e-8, random_state: int = 0):
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        if burn_in is not None and burn_in < 0:
            raise ValueError(f"burn_in must be ≥ 0, got {burn_in}")
        self.confidence = confidence
        self.n_bootstrap = n_bootstrap
        self.burn_in = burn_in
        self.max_var_dim = max_var_dim
        self.atol = atol
        self.rtol = rtol
        self.random_state = random_state

    # --- trajectories -------------------------------------------------------------------
    def analyze(self, traj: Any, metric: str | None = None,
                diversity: dict[str, Any] | None = None, policy: str | None = None,
                metric_info: dict[str, Any] | None = None) -> FixedPointResult:
        """Analyse a trajectory's θ (or one of its metrics).

        Parameters
        ----------
        traj : Trajectory or array
            A :class:`~stabfw.Trajectory`, or an array of shape ``(seeds, generations + 1,
            d)`` or ``(seeds, generations + 1)``.
        metric : str, optional
            Analyse ``traj.metric(metric)`` instead of θ.
        diversity : dict, optional
            Diversity series by name, each ``(seeds, generations + 1)``; default: the
            trajectory's metrics declared ``kind="diversity"`` (``meta["metric_info"]``).
        policy : str, optional
            The mixing policy (default: the trajectory's ``loop.policy``); accumulating
            policies get no AR(1) rate.
        metric_info : dict, optional
            Metric name → :class:`~stabfw.MetricInfo` or its dict (default: the
            trajectory's ``meta["metric_info"]``).

        Notes
        -----
        The verdict rules, in order: non-finite values → ``diverging``; θ never moves →
        ``converged``; a declared diversity metric whose median falls below
        ``COLLAPSE_RATIO`` of its start with a significantly negative log-slope over the
        second half → ``collapsing``; fewer than ``MIN_GENERATIONS`` generations or
        ``MIN_OBSERVATIONS`` seeds × generations → ``inconclusive``; the rate interval
        above 1, or the squared distance from θ* growing significantly over the second half
        while the rate interval reaches 1 → ``diverging``; no rate interval →
        ``inconclusive``; a dominant eigenvalue of modulus ≥ 0.5 with a negative real part
        (interval below 0) or an angle ≥ 60° → ``oscillating``; the level's upper bound
        within ``CONVERGED_FRACTION`` of the initial distance (or steps at the zero floor)
        with the rate interval below 1 → ``converged``; the rate interval below 1 →
        ``stationary_noise``; otherwise (it straddles 1) → ``inconclusive``.
        """
        info = metric_info
        if info is None and hasattr(traj, "meta"):
            info = traj.meta.get("metric_info")
        info = {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v))
                for k, v in (info or {}).items()}
        if policy is None and hasattr(traj, "config"):
            policy = ((traj.config or {}).get("loop") or {}).get("policy")
        if metric is not None:
            kind = info.get(metric, {}).get("kind")
            return self.analyze_series(traj.metric(metric), name=metric, kind=kind,
                                       policy=policy)
        X = traj.params if hasattr(traj, "params") else np.asarray(traj, dtype=float)
        X = np.asarray(X, dtype=float)
        if X.ndim == 2:
            X = X[..., None]
        if X.ndim != 3 or X.shape[1] < 2:
            raise ValueError(f"need an array (seeds, generations + 1 ≥ 2, d); got shape {X.shape}")
        if diversity is None and hasattr(traj, "metric_names"):
            diversity = {k: traj.metric(k) for k, v in info.items()
                         if v.get("kind") == "diversity" and k in traj.metric_names}
        return self._analyze(X, "theta", diversity or {}, policy)

    def analyze_series(self, values: Any, name: str = "metric", kind: str | None = None,
                       policy: str | None = None) -> FixedPointResult:
        """Analyse a scalar series per seed, shape ``(seeds, generations + 1)``.

        With ``kind="diversity"`` the series itself is also checked for collapse.
        """
        V = np.asarray(values, dtype=float)
        if V.ndim == 1:
            V = V[None, :]
        if V.ndim != 2 or V.shape[1] < 2:
            raise ValueError(f"need an array (seeds, generations + 1 ≥ 2); got shape {V.shape}")
        return self._analyze(V[..., None], name, {name: V} if kind == "diversity" else {},
                             policy)

    # --- the pieces -------------------------------------------------------------------
    def _z(self) -> float:
        from scipy.stats import norm

        return float(norm.ppf(1 - (1 - self.confidence) / 2))

    def _choose_burn_in(self, X: np.ndarray) -> int:
        """MSER (White 1997) on the seed-average path m_t: the b that minimises
        Σ_{t≥b} ‖m_t − m̄_b‖² / (T + 1 − b)², over windows of at least a fifth of the
        generations (and 5)."""
        T1 = X.shape[1]
        if self.burn_in is not None:
            return min(int(self.burn_in), T1 - 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(X, axis=0)                                  # (T1, d)
        m = m - m[-1]  # conditioning: sums of squares of differences only
        rev = m[::-1]
        n = np.arange(1, T1 + 1, dtype=float)[:, None]
        s1 = np.cumsum(rev, axis=0)[::-1]                              # Σ_{t≥b} m_t
        s2 = np.cumsum(rev * rev, axis=0)[::-1]
        n = n[::-1]
        sse = np.sum(s2 - s1 * s1 / n, axis=-1)
        mser = sse / n[:, 0] ** 2
        last = max(T1 - max(5, T1 // 5), 0)
        return int(np.nanargmin(mser[:last + 1])) if last > 0 else 0

    def _units(self, S: int, W: int) -> tuple[str, int | None]:
        """Resampling units: seeds, else blocks of ⌈√W⌉ (≥ 5) generations of each seed."""
        if S >= MIN_UNITS:
            return "seed", None
        return "block", max(5, math.ceil(math.sqrt(W)))

    def _unit_sums(self, Y: np.ndarray, block: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit sums over generations of Y (S, W, k) and the counts."""
        S, W, k = Y.shape
        L = W if block is None else block
        nb = -(-W // L)
        ok = np.isfinite(Y).all(-1)
        Yz = np.where(ok[..., None], Y, 0.0)
        pad = nb * L - W
        if pad:
            Yz = np.concatenate([Yz, np.zeros((S, pad, k))], 1)
            ok = np.concatenate([ok, np.zeros((S, pad), bool)], 1)
        sums = Yz.reshape(S * nb, L, k).sum(1)
        counts = ok.reshape(S * nb, L).sum(1).astype(float)
        keep = counts > 0
        return sums[keep], counts[keep]

    def _analyze(self, X: np.ndarray, series: str, diversity: dict[str, Any],
                 policy: str | None) -> FixedPointResult:
        S, T1, d = X.shape
        T = T1 - 1
        z = self._z()
        alpha = 1 - self.confidence
        accumulating = policy in ACCUMULATING_POLICIES
        dist = np.linalg.norm(X - X[:, :1, :], axis=-1)
        finite = bool(np.all(np.isfinite(X)))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dmean, dstd = np.nanmean(dist, axis=0), np.nanstd(dist, axis=0)
            q10, q90 = np.nanquantile(dist, 0.1, axis=0), np.nanquantile(dist, 0.9, axis=0)
            steps = np.linalg.norm(np.diff(X, axis=1), axis=-1)
            step_rms = np.sqrt(np.nanmean(steps**2, axis=0))
        scale = float(np.sqrt(np.nanmean(np.sum(X[:, 0, :] ** 2, axis=-1))))
        floor = self.atol + self.rtol * max(scale, 1e-300)
        ev: dict[str, Any] = {"n_seeds": S, "generations": T, "dim": d, "scale": scale,
                              "zero_floor": floor, "policy": policy}
        nan2 = (math.nan, math.nan)
        theta_star = np.nanmean(X[:, 0, :], axis=0)
        state: dict[str, Any] = {
            "rate": math.nan, "ci": nan2, "se": math.nan, "eig": complex(math.nan),
            "burn_in": 0, "limit": np.full(d, np.nan), "limit_ci": (np.full(d, np.nan),) * 2,
            "limit_dist": math.nan, "level": math.nan, "level_ci": nan2, "d0": math.nan,
            "stat_level": math.nan, "collapse": {}}

        def result(verdict: Verdict, reason: str) -> FixedPointResult:
            st = state
            return FixedPointResult(
                verdict, reason, float(st["rate"]), (float(st["ci"][0]), float(st["ci"][1])),
                float(st["se"]), complex(st["eig"]), int(st["burn_in"]), st["limit"],
                st["limit_ci"], float(st["limit_dist"]), float(st["level"]),
                (float(st["level_ci"][0]), float(st["level_ci"][1])), float(st["d0"]),
                float(st["stat_level"]), st["collapse"], dmean, dstd, q10, q90, step_rms, S, T,
                d, series, self.confidence, ev)

        if not finite:
            bad = int(np.argmax(~np.all(np.isfinite(X), axis=(0, 2))))
            ev["first_nonfinite_generation"] = bad
            return result("diverging", f"values become non-finite at generation {bad}")
        if float(np.max(dist)) <= floor:
            ev["max_distance"] = float(np.max(dist))
            state.update(rate=0.0, ci=(0.0, 0.0), se=0.0, eig=0.0, limit=theta_star,
                         limit_ci=(theta_star, theta_star), limit_dist=0.0, level=0.0,
                         level_ci=(0.0, 0.0), d0=0.0, stat_level=0.0)
            return result("converged", f"θ never leaves θ* (max distance {np.max(dist):.2e} ≤ "
                          f"{floor:.1e})")

        # --- where it goes: the stationary window, θ̂_∞ and the level around it
        b = self._choose_burn_in(X)
        state["burn_in"] = b
        Wn = X[:, b:, :]
        unit, block = self._units(S, Wn.shape[1])
        rng = np.random.default_rng(self.random_state)
        sums, counts = self._unit_sums(Wn, block)
        limit = sums.sum(0) / counts.sum()
        dev2 = np.sum((Wn - limit) ** 2, axis=-1, keepdims=True)
        sq, _ = self._unit_sums(dev2, block)
        star2 = np.sum((Wn - X[:, :1, :]) ** 2, axis=-1, keepdims=True)
        level = math.sqrt(float(sq.sum() / counts.sum()))
        d0 = float(np.sqrt(np.mean(np.sum((X[:, 0, :] - limit) ** 2, axis=-1))))
        state.update(limit=limit, level=level, d0=d0,
                     limit_dist=float(np.linalg.norm(limit - theta_star)),
                     stat_level=math.sqrt(float(np.nanmean(star2))))
        U = sums.shape[0]
        if U >= MIN_UNITS and self.n_bootstrap >= 20:
            Wb = rng.multinomial(U, np.full(U, 1.0 / U), size=self.n_bootstrap).astype(float)
            nb_ = Wb @ counts
            lim_b = (Wb @ sums) / nb_[:, None]
            # the level of each resample around its own limit: E‖θ−m‖² = E‖θ−μ‖² − ‖m−μ‖²
            lev_b = np.sqrt(np.maximum((Wb @ sq[:, 0]) / nb_
                                       - np.sum((lim_b - limit) ** 2, axis=-1), 0.0))
            lo, hi = np.quantile(lim_b, [alpha / 2, 1 - alpha / 2], axis=0)
            state["limit_ci"] = (lo, hi)
            state["level_ci"] = tuple(np.quantile(lev_b, [alpha / 2, 1 - alpha / 2]))
        ev.update({"window": [b, T], "bootstrap_unit": unit, "n_units": U})

        # --- the rate
        rate_note = None
        if accumulating:
            rate_note = (f"policy {policy!r} accumulates every past generation: θ_(t+1) "
                         "depends on all of them, so a first-order autoregression's "
                         "coefficient is not its rate (reported as NaN)")
        else:
            pr = panel_rate(X, confidence=self.confidence, n_bootstrap=max(self.n_bootstrap, 20),
                            max_var_dim=self.max_var_dim, min_units=MIN_UNITS,
                            random_state=self.random_state)
            state.update(rate=pr.rate, ci=pr.rate_ci, se=pr.rate_se, eig=pr.eigenvalue)
            ev.update({"rate_fit": pr.fit, "rate_status": pr.status, "rate_unit": pr.unit,
                       "rate_units": pr.n_units, "noise_var": pr.noise_var,
                       "eigenvalue_real_ci": list(pr.eigenvalue_real_ci)})
            if pr.status != "ok":
                rate_note = f"rate interval not available ({pr.status})"
        ev["rate_note"] = rate_note
        rate, ci, eig = state["rate"], state["ci"], state["eig"]

        # --- trends over the second half
        h = T // 2
        t2 = np.arange(h, T1, dtype=float)
        g_b, g_lo, g_hi = _trend(dist[:, h:] ** 2, t2, z)
        with np.errstate(divide="ignore"):
            s_b, s_lo, s_hi = _trend(np.log(np.maximum(steps[:, max(h - 1, 0):], 1e-300)),
                                     np.arange(max(h, 1), T1, dtype=float), z)
        # over the whole run too: a short panel's second half can be too few generations
        a_b, a_lo, a_hi = _trend(dist[:, 1:] ** 2, np.arange(1, T1, dtype=float), z)
        growing = bool((np.isfinite(g_lo) and g_lo > 0)
                       or (np.isfinite(a_lo) and a_lo > 0 and g_b > 0))
        ev.update({"sq_distance_slope_all": a_b, "sq_distance_slope_all_ci": [a_lo, a_hi]})
        steps_decay = bool(np.isfinite(s_hi) and s_hi < 0)
        ev.update({"sq_distance_slope": g_b, "sq_distance_slope_ci": [g_lo, g_hi],
                   "growing": growing, "step_log_slope": s_b, "step_log_slope_ci": [s_lo, s_hi],
                   "steps_decay": steps_decay, "final_step": float(step_rms[-1])})

        # --- diversity metrics heading to zero
        collapse = {}
        for name, V in diversity.items():
            V = np.asarray(V, dtype=float).reshape(S, -1)
            with np.errstate(divide="ignore", invalid="ignore"):
                logv = np.log(np.where(V > 0, V, 1e-300))
                logv[~np.isfinite(V)] = np.nan
                v0 = float(np.nanmedian(V[:, 0]))
                vT = float(np.nanmedian(V[:, -1]))
                ratio = vT / v0 if v0 > 0 else math.nan
            lb, llo, lhi = _trend(logv[:, h:], t2, z) if V.shape[1] - h >= 3 else (math.nan,) * 3
            falls = bool(np.isfinite(ratio) and ratio < COLLAPSE_RATIO and np.isfinite(lhi)
                         and lhi < 0)
            collapse[name] = {"final_over_initial": ratio, "log_slope": lb,
                              "log_slope_ci": [llo, lhi], "collapsing": falls}
        state["collapse"] = collapse
        if series != "theta" and series in collapse:
            ev["final_over_initial"] = collapse[series]["final_over_initial"]
            ev["log_slope"] = collapse[series]["log_slope"]

        def rng_txt() -> str:
            return f"{rate:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"

        lvl = f"level {level:.3g} around θ̂_∞ ({self.confidence:.0%} CI " \
              f"[{state['level_ci'][0]:.3g}, {state['level_ci'][1]:.3g}])"
        # --- the verdict
        falling = [n for n, c in collapse.items() if c["collapsing"]]
        if falling:
            c = collapse[falling[0]]
            return result("collapsing", f"diversity metric {falling[0]} falls to "
                          f"{c['final_over_initial']:.2g} of its initial median and keeps "
                          f"falling (log-slope {c['log_slope']:.3g}/generation, CI "
                          f"[{c['log_slope_ci'][0]:.3g}, {c['log_slope_ci'][1]:.3g}])")
        if T < MIN_GENERATIONS or S * T < MIN_OBSERVATIONS:
            return result("inconclusive", f"too little evidence: {S} seed(s) × {T} "
                          f"generation(s) (need ≥ {MIN_GENERATIONS} generations and ≥ "
                          f"{MIN_OBSERVATIONS} seed-generations)")
        if np.isfinite(ci[0]) and ci[0] > 1.0:
            return result("diverging", f"the rate's interval lies above 1: {rng_txt()}")
        noise = ev.get("noise_var")
        if (growing and not np.isfinite(ci[1]) and np.isfinite(rate) and rate < 1.0
                and noise is not None and np.isfinite(noise)
                and float(np.mean(dist[:, -1] ** 2)) < 20 * noise):
            # growth of the distance from θ* alone, within a few noise variances, against a
            # rate below 1 without an interval (too few seeds): a loop still settling at its
            # noise level looks the same; a real drift leaves the noise far behind
            return result("inconclusive", f"the squared distance from θ* grows ({g_b:.3g}/"
                          f"generation over the second half) but the rate {rate:.3g} has no "
                          f"interval ({S} seed(s) are too few to tell settling from drift)")
        if growing and not (np.isfinite(ci[1]) and ci[1] < 1.0) and not (
                accumulating and steps_decay):
            return result("diverging", f"the squared distance from θ* keeps growing "
                          f"({g_b:.3g}/generation over the second half, CI [{g_lo:.3g}, "
                          f"{g_hi:.3g}])" + (f" and the rate {rng_txt()} does not exclude 1"
                                             if np.isfinite(rate) else ""))
        if accumulating:
            if steps_decay:
                return result("converged", f"steps shrink (log-slope {s_b:.3g}/generation, "
                              f"CI [{s_lo:.3g}, {s_hi:.3g}]): each seed settles; "
                              f"{lvl}; {rate_note}")
            if not growing:
                return result("stationary_noise", f"no trend in the distance from θ*; {lvl}; "
                              f"{rate_note}")
            return result("inconclusive", f"no rate for this policy and no clear trend; "
                          f"{rate_note}")
        if not np.isfinite(ci[1]):
            return result("inconclusive", f"the rate {rate:.3g} has no interval "
                          f"({ev.get('rate_status')}: {S} seed(s) × {T} generations); {lvl}")
        angle = abs(math.atan2(eig.imag, eig.real)) if np.isfinite(rate) else 0.0
        ev["eigenvalue_angle"] = angle
        rci = ev.get("eigenvalue_real_ci") or [math.nan, math.nan]
        if rate >= 0.5 and ((np.isfinite(rci[1]) and rci[1] < 0) or angle >= math.pi / 3):
            return result("oscillating", f"dominant eigenvalue {eig.real:.3g}{eig.imag:+.3g}i "
                          f"(modulus {rng_txt()}, angle {math.degrees(angle):.0f}°)")
        lev_hi = state["level_ci"][1] if np.isfinite(state["level_ci"][1]) else level
        at_floor = step_rms[-1] <= 100 * floor
        if ci[1] < 1.0 and (at_floor or lev_hi <= CONVERGED_FRACTION * d0):
            return result("converged", f"settles at θ̂_∞, {state['limit_dist']:.3g} from θ*, "
                          f"at rate {rng_txt()}; {lvl} ≤ {CONVERGED_FRACTION:g} × the initial "
                          f"distance {d0:.3g}")
        if ci[1] < 1.0:
            return result("stationary_noise", f"mean-reverting at rate {rng_txt()} to θ̂_∞ "
                          f"({state['limit_dist']:.3g} from θ*); {lvl}")
        return result("inconclusive", f"the rate's interval {rng_txt()} straddles 1 and the "
                      "distance from θ* shows no significant growth")

    # --- solving --------------------------------------------------------------------------
    def solve(self, loop: Any, config: Any, method: str = "anderson", x0: Any | None = None,
              seed: int | None = None, jacobian: Callable | None = None,
              **options: Any) -> FixedPointSolution:
        """Find the fixed point of the loop's retraining map (common random numbers).

        Parameters
        ----------
        loop : SelfConsumingLoop
            Must be able to take θ back (``capabilities().with_theta``).
        config : RetrainConfig or dict
        method : {"picard", "anderson", "newton"}
        x0 : array, optional
            Starting point (default θ*).
        seed : int, optional
            The replicate whose streams define the map (default: the config's first seed).
        jacobian : callable, optional
            ``jacobian(x, G(x))``, which ``newton`` needs
            (:func:`stabfw.analysis.jacobian.map_jacobian` for a differentiable domain).
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
        return solve_from_theta_star(G, SolveOptions(method=method, **options), x0=x0,
                                     jacobian=jacobian)


def solve_from_theta_star(G: RetrainingMap, options: SolveOptions | None = None,
                          x0: Any | None = None,
                          jacobian: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
                          ) -> FixedPointSolution:
    """The fixed point of a retraining map, solved from θ* (or ``x0``): the one place
    every analyzer solves for it, with the defaults of
    :class:`~stabfw.run.analysis_config.SolveOptions`.

    ``jacobian(x, G(x))`` gives G's Jacobian for ``method="newton"``
    (:func:`stabfw.analysis.jacobian.map_jacobian` builds it for a differentiable domain).
    ``info`` adds ``theta_star_residual`` (‖G(θ*) − θ*‖), ``distance_to_theta_star`` and
    the replicate's ``seed``.
    """
    G.require_autonomous("the fixed-point solve")
    o = options or SolveOptions()
    kw = o.solver_kwargs()
    if o.method == "newton":
        if jacobian is None:
            raise ValueError("method 'newton' needs the map's Jacobian: pass jacobian="
                             "stabfw.analysis.jacobian.map_jacobian(loop, G) (differentiable "
                             "domains), or use 'anderson'")
        kw["jacobian"] = jacobian
    theta_star = G.theta_star
    start = theta_star if x0 is None else np.asarray(x0, dtype=float)
    sol = solve_fixed_point(G, start, method=o.method, **kw)
    res0 = sol.residuals[0] if x0 is None and sol.residuals.size else G.residual(theta_star)
    info = {**sol.info, "theta_star_residual": float(res0),
            "distance_to_theta_star": float(np.linalg.norm(sol.fixed_point - theta_star)),
            "seed": G.seed}
    return FixedPointSolution(sol.fixed_point, sol.status, sol.residuals, sol.n_evaluations,
                              sol.method, sol.residual, sol.tol, sol.wall_time, info,
                              sol.local_rate, sol.stability)
