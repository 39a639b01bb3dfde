"""Critical values: where a quantity crosses a threshold, and the critical λ of a loop.

One home for every crossing: :func:`critical_value` interpolates where a measured
quantity (ρ(J), a metric's drift, ...) crosses a threshold between grid points, with the
delta-method standard error; :func:`critical_from_labels` does the same for stable /
unstable verdicts; :func:`spectral_radius_scan` measures ρ(J) on a grid of λ (the λ curve
of a run's analysis and the evaluations of :func:`critical_lambda` both use it).

:func:`critical_lambda` brackets the crossing on a grid of λ (expanding it geometrically
when needed) and bisects it. With the ``spectral_radius`` criterion ρ(J) is measured at
each λ (averaged over ``n_replicates`` seeds, each seed's own retraining map); λ* is the
linear interpolation of ρ − 1 inside the final bracket, and its uncertainty combines the
bracket's half-width with the seed-to-seed standard error of ρ divided by the local slope
dρ/dλ. With the ``verdict`` criterion each λ is a short run analysed by
:class:`~stabfw.FixedPointAnalyzer`; "unstable" means ``diverging``, ``collapsing`` or
``oscillating``.

References
----------
Brent, *Algorithms for Minimization without Derivatives*, Prentice-Hall 1973, ch. 4
(bracketing and bisection). Bertrand et al., ICLR 2024 (the stability threshold in λ).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from stabfw._util.numbers import fmt
from stabfw.analysis.fixed_point import FixedPointAnalyzer
from stabfw.analysis.jacobian import JacobianAnalyzer
from stabfw.analysis.results import AnalysisResult
from stabfw.errors import ConfigError
from stabfw.run.config import XSCALES
from stabfw.run.retraining_map import RetrainingMap
from stabfw.run.runner import run_loop
from stabfw.run.step import as_retrain_config

__all__ = [
    "CriticalLambda",
    "CriticalValue",
    "bootstrap_crossing",
    "coordinate_derivative",
    "critical_from_labels",
    "critical_lambda",
    "critical_value",
    "from_coordinate",
    "resolve_xscale",
    "spectral_radius_scan",
    "to_coordinate",
]

UNSTABLE = ("diverging", "collapsing", "oscillating")


# --- coordinates --------------------------------------------------------------------
def to_coordinate(x: np.ndarray, scale: str) -> np.ndarray:
    """u = f(x) of the interpolation coordinate ``scale`` (``lam``: λ/(1+λ), ∞ ↦ 1)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == "linear":
            return x
        if scale == "log":
            return np.log(x)
        if scale == "inverse":
            return np.where(np.isinf(x), 0.0, 1.0 / x)
        if scale == "lam":  # λ ↦ λ/(1+λ) ∈ [0, 1]: the synthetic share; ∞ ↦ 1
            return np.where(np.isinf(x), 1.0, x / (1.0 + x))
    raise ValueError(f"xscale must be one of {', '.join(XSCALES[1:])}, got {scale!r}")


def from_coordinate(u: float, scale: str) -> float:
    """x = f⁻¹(u)."""
    if scale == "linear":
        return u
    if scale == "log":
        return math.exp(u)
    if scale == "inverse":
        return math.inf if u == 0 else 1.0 / u
    return math.inf if u >= 1 else u / (1.0 - u)


def coordinate_derivative(u: float, scale: str) -> float:
    """dx/du at u (maps a standard error in u back to x)."""
    if scale == "linear":
        return 1.0
    if scale == "log":
        return math.exp(u)
    if scale == "inverse":
        return math.inf if u == 0 else 1.0 / u**2
    return math.inf if u >= 1 else 1.0 / (1.0 - u) ** 2


def resolve_xscale(axis: str, xscale: str = "auto") -> str:
    """``auto`` is ``lam`` (λ/(1+λ), so λ = ∞ has a place) for ``loop.lam``, else linear."""
    if xscale == "auto":
        return "lam" if axis == "loop.lam" else "linear"
    if xscale not in XSCALES:
        raise ConfigError(f"sweep.stability.xscale: must be one of {', '.join(XSCALES)}, "
                          f"got {xscale!r}")
    return xscale


# --- critical values ----------------------------------------------------------------
@dataclass
class CriticalValue(AnalysisResult):
    """Where a quantity crosses a threshold along one swept axis.

    Attributes
    ----------
    value : float or None
        The critical value (None when the quantity stays on one side over the grid).
    stderr : float
        Its standard error (delta method; for verdicts, half the bracket / √3).
    bracket : (float, float) or None
        The two grid values between which the crossing lies.
    status : str
        ``crossing``, ``multiple`` (the first crossing is reported), ``below`` or
        ``above`` (no crossing: the quantity stays below / above the threshold).
    axis, quantity, threshold, xscale : the question asked
    group : dict
        The values of the other swept axes this curve belongs to.
    crossings : list of float
        Every crossing found (several when the quantity is not monotone).
    """

    value: float | None
    stderr: float
    bracket: tuple[float, float] | None
    status: str
    axis: str = ""
    quantity: str = ""
    threshold: float = 1.0
    xscale: str = "linear"
    group: dict[str, Any] = field(default_factory=dict)
    crossings: list[float] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people, e.g. ``loop.lam* = 0.52 ± 0.03 (between 0.5 and 0.6)``."""
        name = self.axis.split(".")[-1] + "*"
        where = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.group.items())
        where = f" [{where}]" if where else ""
        if self.value is None:
            side = "below" if self.status == "below" else "above"
            return (f"{name}: no crossing — {self.quantity} stays {side} {self.threshold:g} over "
                    f"the grid{where}")
        lo, hi = self.bracket or (math.nan, math.nan)
        return (f"{name} = {self.value:.4g} ± {self.stderr:.2g} (between {lo:g} and {hi:g}; "
                f"{self.quantity} = {self.threshold:g}){where}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (∞ as the string ``"inf"``)."""
        return self._plain(asdict(self))


def critical_value(
    x: Sequence[float],
    y: Sequence[float],
    stderr: Sequence[float] | None = None,
    threshold: float = 1.0,
    xscale: str = "linear",
) -> CriticalValue:
    """Where ``y(x)`` crosses ``threshold``, with the standard error of that point.

    The crossing is interpolated linearly between the bracketing grid points in the
    coordinate ``u = f(x)`` given by ``xscale`` (``linear``, ``log``, ``inverse`` = 1/x,
    ``lam`` = x/(1+x)); pick the one in which ``y`` is closest to linear. With
    ``d = y − threshold`` on the bracket ``(u₀, u₁)``, ``u* = u₀ + d₀ (u₁ − u₀)/(d₀ − d₁)`` and

        Var u* = (u₁ − u₀)² (d₁² s₀² + d₀² s₁²) / (d₀ − d₁)⁴,

    mapped back to x by the derivative of f⁻¹.

    Parameters
    ----------
    x : grid values (any order; ``inf`` allowed for ``inverse`` and ``lam``)
    y : the quantity's mean at each grid value
    stderr : its standard errors (default 0)
    threshold : float
    xscale : str

    Returns
    -------
    CriticalValue

    References
    ----------
    Delta method: Casella & Berger, *Statistical Inference*, 2nd ed., 2002, §5.5.4.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    s = np.zeros_like(y) if stderr is None else np.nan_to_num(np.asarray(stderr, float))
    u = to_coordinate(x, xscale)
    keep = np.isfinite(u) & np.isfinite(y)
    x, y, s, u = x[keep], y[keep], s[keep], u[keep]
    order = np.argsort(u, kind="stable")
    if to_coordinate(np.array([1.0, 2.0]), xscale)[1] < to_coordinate(np.array([1.0]), xscale)[0]:
        order = order[::-1]  # walk in increasing x
    x, y, s, u = x[order], y[order], s[order], u[order]
    d = y - threshold
    found: list[tuple[float, float, tuple[float, float]]] = []
    for i in range(len(d) - 1):
        if d[i] == 0:
            found.append((x[i], _exact_se(u, d, s, i, xscale), (x[i], x[i])))
        elif d[i] * d[i + 1] < 0:
            du, dd = u[i + 1] - u[i], d[i] - d[i + 1]
            ustar = u[i] + d[i] * du / dd
            var_u = du**2 * (d[i + 1] ** 2 * s[i] ** 2 + d[i] ** 2 * s[i + 1] ** 2) / dd**4
            se = abs(coordinate_derivative(ustar, xscale)) * math.sqrt(var_u)
            found.append((from_coordinate(ustar, xscale), se, (x[i], x[i + 1])))
    if len(d) and d[-1] == 0 and not found:
        found.append((x[-1], 0.0, (x[-1], x[-1])))
    if not found:
        status = "below" if len(d) and np.all(d < 0) else "above"
        return CriticalValue(None, math.nan, None, status, threshold=threshold, xscale=xscale)
    value, se, bracket = found[0]
    return CriticalValue(float(value), float(se), (float(bracket[0]), float(bracket[1])),
                         "crossing" if len(found) == 1 else "multiple", threshold=threshold,
                         xscale=xscale, crossings=[float(f[0]) for f in found])


def _exact_se(u, d, s, i, xscale) -> float:
    """Standard error of a crossing that falls on a grid point: the local slope's."""
    j = i + 1 if i + 1 < len(u) else i - 1
    slope = (d[j] - d[i]) / (u[j] - u[i]) if u[j] != u[i] else math.inf
    return abs(coordinate_derivative(u[i], xscale)) * (s[i] / abs(slope) if slope else math.inf)


def critical_from_labels(
    x: Sequence[float], unstable: Sequence[bool], xscale: str = "linear"
) -> CriticalValue:
    """The first change from stable to unstable along ``x``: the bracket's midpoint (in
    the ``xscale`` coordinate) ± half the bracket (reported as stderr = half-width/√3,
    a uniform distribution over the bracket)."""
    x = np.asarray(x, dtype=float)
    lab = np.asarray(unstable, dtype=bool)
    u = to_coordinate(x, xscale)
    order = np.argsort(u, kind="stable")
    if to_coordinate(np.array([1.0, 2.0]), xscale)[1] < to_coordinate(np.array([1.0]), xscale)[0]:
        order = order[::-1]
    x, lab, u = x[order], lab[order], u[order]
    changes = [i for i in range(len(lab) - 1) if lab[i] != lab[i + 1]]
    if not changes:
        return CriticalValue(None, math.nan, None, "above" if lab.all() else "below",
                             threshold=0.5, xscale=xscale)
    i = changes[0]
    mid = 0.5 * (u[i] + u[i + 1])
    half = abs(from_coordinate(u[i + 1], xscale) - from_coordinate(u[i], xscale)) / 2
    return CriticalValue(float(from_coordinate(mid, xscale)), float(half / math.sqrt(3)),
                         (float(x[i]), float(x[i + 1])),
                         "crossing" if len(changes) == 1 else "multiple", threshold=0.5,
                         xscale=xscale,
                         crossings=[float(from_coordinate(0.5 * (u[j] + u[j + 1]), xscale))
                                    for j in changes])


@dataclass(frozen=True)
class CriticalLambda(AnalysisResult):
    """Where the loop turns unstable, with a statistical interval kept apart from the
    search's tolerance.

    Attributes
    ----------
    lam_star : float or None
        The critical λ (None unless ``status == "crossing"``).
    bracket : (float, float)
        The final stable / unstable λ of the search (the swept range without a crossing).
    ci : (float, float) or None
        Statistical interval of λ* at ``confidence``: a bootstrap over seeds (the seeds'
        ρ resampled together at every λ evaluated, the crossing re-interpolated each time);
        None with one seed or the ``verdict`` criterion. An end at ``inf`` (or at the
        lower end of the range) means some resamples cross outside the swept range.
    tolerance : float
        Half-width of the final bisection bracket: how finely λ* was located — no
        statistical error.
    status : {"crossing", "no_crossing", "unstable_throughout", "inconclusive"}
        ``no_crossing``: ρ < 1 over the whole swept range ``[λ_min, λ_max]``;
        ``unstable_throughout``: ρ ≥ 1 already at its lower end; ``inconclusive``: ρ(J) at
        some λ is no evidence (its Jacobian status is not ``ok``).
    text : str
        One sentence for people.
    criterion : {"spectral_radius", "verdict"}
    history : list of dict
        Every λ evaluated: its ρ (per seed, with status) or verdict.
    n_lams : int
    wall_time : float
    swept : (float, float)
        Smallest and largest λ evaluated.
    confidence : float
    uncertainty : float
        The older single number: ``tolerance`` combined in quadrature with the CI's
        half-width / 1.645 (kept for compatibility; read ``ci`` and ``tolerance``).
    """

    lam_star: float | None
    bracket: tuple[float, float]
    uncertainty: float
    status: str
    criterion: str
    history: list[dict[str, Any]] = field(default_factory=list)
    n_lams: int = 0
    wall_time: float = 0.0
    ci: tuple[float, float] | None = None
    tolerance: float = math.nan
    text: str = ""
    swept: tuple[float, float] = (math.nan, math.nan)
    confidence: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return self._plain({
            "lam_star": self.lam_star, "ci": None if self.ci is None else list(self.ci),
            "tolerance": self.tolerance, "status": self.status, "text": self.text,
            "confidence": self.confidence, "bracket": list(self.bracket),
            "swept": list(self.swept), "uncertainty": self.uncertainty,
            "criterion": self.criterion, "n_lams": self.n_lams,
            "wall_time": round(self.wall_time, 3), "history": self.history})


def _share(lam: np.ndarray) -> np.ndarray:
    return to_coordinate(np.asarray(lam, float), "lam")


def _first_crossing(u: np.ndarray, rho: np.ndarray) -> float:
    """λ/(1+λ) where the piecewise-linear ρ(u) first reaches 1 (inf: never, −inf: at once)."""
    if rho[0] >= 1:
        return -math.inf
    for i in range(len(u) - 1):
        if rho[i] < 1 <= rho[i + 1]:
            return float(u[i] + (1 - rho[i]) * (u[i + 1] - u[i]) / (rho[i + 1] - rho[i]))
    return math.inf


def bootstrap_crossing(lams: Sequence[float], rhos: np.ndarray, confidence: float = 0.9,
                       n_boot: int = 2000, seed: int = 0,
                       expand: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of the first λ where the seed-mean ρ(λ) crosses 1.

    ``rhos[i, s]`` is seed ``s``'s ρ at ``lams[i]`` (finite λ, the same seeds at each λ).
    Seeds are resampled together (their ρ are correlated across λ: same data and draws),
    the mean curve is interpolated linearly in λ/(1+λ) between the evaluated λ only, and
    its first crossing taken; resamples that do not cross inside the swept range count as
    beyond it (∞ above, the lower end below). With few seeds the plain percentile interval
    is too narrow (it ignores the t-distribution and the 1/k bias of the resampled
    variance); ``expand`` takes the percentiles at the tail level ``Φ(−√(k/(k−1))·t_{k−1})``
    instead of ``(1 − confidence)/2`` (Hesterberg's expanded percentile interval).

    References
    ----------
    Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall 1993, ch. 13
    (percentile intervals). Hesterberg, "What teachers should know about the bootstrap",
    The American Statistician 69(4), 2015, §5 (expanded percentile interval).
    """
    lams = np.asarray(lams, float)
    order = np.argsort(lams)
    lams, R = lams[order], np.asarray(rhos, float)[order]
    u = _share(lams)
    k = R.shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n_boot, k))
    means = R[:, idx].mean(axis=2)  # (n_lam, n_boot)
    star = np.array([_first_crossing(u, means[:, b]) for b in range(n_boot)])
    star = np.sort(np.where(star == -math.inf, u[0], star))
    a = (1 - confidence) / 2
    if expand and k >= 2:
        from scipy import stats

        a = float(stats.norm.cdf(-math.sqrt(k / (k - 1)) * stats.t.ppf(1 - a, k - 1)))
    lo = star[math.floor(a * (n_boot - 1))]
    hi = star[math.ceil((1 - a) * (n_boot - 1))]
    return (float(from_coordinate(lo, "lam")), float(from_coordinate(hi, "lam")))


def _default_analyzer(loop: Any) -> JacobianAnalyzer:
    method = "finite_difference" if loop.capabilities().with_theta else "auto"
    return JacobianAnalyzer(method=method, k=2, bounds=False, norm=False)


def spectral_radius_scan(loop: Any, config: Any, lams: Sequence[float], seeds: Sequence[int],
                         analyzer: JacobianAnalyzer | None = None, at: str = "theta_star",
                         maps: dict[int, RetrainingMap] | None = None) -> list[dict[str, Any]]:
    """ρ(J) at each λ of ``lams``, over the seeds ``seeds``: the one ρ(λ) scan.

    Each seed's map is built once (θ* is fitted once per seed, whatever λ) and re-used at
    every λ through :meth:`RetrainingMap.with_lam`; ``at`` is passed to
    :meth:`JacobianAnalyzer.analyze` (``fixed_point`` solves each λ's fixed point first,
    ``auto`` only where θ* is not one).

    Returns
    -------
    list of dict
        Per λ: ``lam``, ``rho`` (mean over seeds), ``rho_se`` (its standard error, 0 with
        one seed), ``rho_ci`` (t-interval, None with one seed), ``rhos`` (per seed),
        ``status`` and ``status_reason`` of the Jacobian (anything but ``ok`` is no
        evidence), ``at`` (where J was taken) and the ``method`` used.
    """
    cfg = as_retrain_config(config)
    maps = {} if maps is None else maps
    seeds = [int(s) for s in seeds]
    base = copy.copy(analyzer or _default_analyzer(loop))
    base.seeds, base.seed = seeds, seeds[0]
    out = []
    for lam in lams:
        c = cfg.model_copy(update={"lam": float(lam)})
        if seeds[0] not in maps:
            maps[seeds[0]] = RetrainingMap(loop, cfg, seed=seeds[0])
        G = maps[seeds[0]].with_lam(float(lam))
        res = base.analyze(loop, c, at=at, retraining_map=G, maps=maps)
        out.append({"lam": float(lam), "rho": float(res.spectral_radius),
                    "rho_se": res.spectral_radius_se or 0.0,
                    "rho_ci": None if res.spectral_radius_ci is None
                    else [float(v) for v in res.spectral_radius_ci],
                    "rhos": [float(r) for r in res.spectral_radii], "status": res.status,
                    "status_reason": res.status_reason, "at": res.at, "method": res.method})
    return out


def critical_lambda(
    loop: Any,
    config: Any,
    *,
    criterion: Literal["spectral_radius", "verdict"] = "spectral_radius",
    bracket: tuple[float, float] = (0.0, 4.0),
    max_lam: float = 1e3,
    tol: float = 1e-2,
    max_iter: int = 30,
    n_replicates: int = 1,
    analyzer: Any | None = None,
    fixed_point_analyzer: Any | None = None,
) -> CriticalLambda:
    """The λ where the loop turns unstable, by bracketing and bisection.

    Parameters
    ----------
    loop : SelfConsumingLoop
    config : RetrainConfig or dict
        Everything but λ (which is varied); ``policy`` must not be ``fully_synthetic``.
    criterion : {"spectral_radius", "verdict"}
        ``spectral_radius``: ρ(J) ≥ 1 is unstable (a :class:`~stabfw.JacobianAnalyzer`,
        default ``finite_difference`` where θ can be substituted). ``verdict``: a run of
        ``config.generations`` generations judged by :class:`~stabfw.FixedPointAnalyzer`.
    bracket : (float, float)
        Initial search interval; the upper end is doubled (up to ``max_lam``) until the
        loop is unstable there.
    tol : float
        Stop when the bracket is narrower than ``tol·max(1, λ)``.
    n_replicates : int
        Seeds whose ρ is averaged at each λ (the config's first seeds).
    analyzer : JacobianAnalyzer, optional
    fixed_point_analyzer : FixedPointAnalyzer, optional

    Returns
    -------
    CriticalLambda

    References
    ----------
    Brent, *Algorithms for Minimization without Derivatives*, 1973, ch. 4.
    """
    cfg = as_retrain_config(config)
    if cfg.policy == "fully_synthetic":
        raise ValueError("critical_lambda varies λ; policy 'fully_synthetic' has no λ")
    lo, hi = float(bracket[0]), float(bracket[1])
    if not 0 <= lo < hi:
        raise ValueError(f"bracket must satisfy 0 ≤ lo < hi, got {bracket}")
    if criterion not in ("spectral_radius", "verdict"):
        raise ValueError(f"criterion must be spectral_radius or verdict; got {criterion!r}")
    if n_replicates < 1:
        raise ValueError("n_replicates must be ≥ 1")
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    maps: dict[int, RetrainingMap] = {}
    seeds = cfg.seed_list[:n_replicates]
    if len(seeds) < n_replicates:
        seeds = list(range(n_replicates))
    conf = float(getattr(analyzer, "confidence", 0.9))

    def at(lam: float) -> dict[str, Any]:
        if criterion == "spectral_radius":
            rec = spectral_radius_scan(loop, cfg, [lam], seeds, analyzer, maps=maps)[0]
            rec.pop("method")
            rec["unstable"] = rec["rho"] >= 1.0
        else:
            c = cfg.model_copy(update={"lam": lam})
            fp = (fixed_point_analyzer or FixedPointAnalyzer()).analyze(run_loop(loop, c))
            rec = {"lam": lam, "verdict": fp.verdict, "rate": float(fp.rate),
                   "unstable": fp.verdict in UNSTABLE}
        history.append(rec)
        return rec

    def swept() -> tuple[float, float]:
        ls = [h["lam"] for h in history]
        return (min(ls), max(ls))

    def done(lam_star: float | None, br: tuple[float, float], status: str, text: str,
             tolerance: float = math.nan, ci: tuple[float, float] | None = None,
             unc: float = math.nan) -> CriticalLambda:
        return CriticalLambda(lam_star, br, unc, status, criterion, history, len(history),
                              time.perf_counter() - t0, ci, tolerance, text, swept(), conf)

    def no_evidence(rec: dict[str, Any]) -> CriticalLambda | None:
        if rec.get("status", "ok") == "ok":
            return None
        what = "ρ(J)" if criterion == "spectral_radius" else "the verdict"
        return done(None, (rec["lam"], rec["lam"]), "inconclusive",
                    f"λ*: inconclusive — {what} at λ = {fmt(rec['lam'], 4)} is no evidence "
                    f"({rec['status']}: {rec.get('status_reason') or 'no reason given'})")

    r_lo = at(lo)
    if (bad := no_evidence(r_lo)) is not None:
        return bad
    if r_lo["unstable"]:
        return done(None, (lo, lo), "unstable_throughout",
                    f"λ*: no crossing — unstable already at the lower end λ = {fmt(lo, 4)}")
    r_hi = at(hi)
    if (bad := no_evidence(r_hi)) is not None:
        return bad
    while not r_hi["unstable"]:
        if hi >= max_lam:
            return done(None, (lo, hi), "no_crossing",
                        f"λ*: no crossing in the swept range [{fmt(bracket[0], 4)}, "
                        f"{fmt(hi, 4)}] (stable at every λ evaluated)")
        lo, r_lo = hi, r_hi
        hi = min(2 * hi, max_lam)
        r_hi = at(hi)
        if (bad := no_evidence(r_hi)) is not None:
            return bad
    for _ in range(max_iter):
        if hi - lo <= tol * max(1.0, lo):
            break
        mid = 0.5 * (lo + hi)
        r_mid = at(mid)
        if (bad := no_evidence(r_mid)) is not None:
            return bad
        if r_mid["unstable"]:
            hi, r_hi = mid, r_mid
        else:
            lo, r_lo = mid, r_mid
    half = 0.5 * (hi - lo)
    if criterion != "spectral_radius":
        lam_star = 0.5 * (lo + hi)
        return done(lam_star, (lo, hi), "crossing",
                    f"λ* ≈ {fmt(lam_star, 4)} (between the verdicts at λ = {fmt(lo, 4)} and "
                    f"{fmt(hi, 4)}; search tolerance ± {fmt(half, 2)}; no statistical interval "
                    "for the verdict criterion)", tolerance=half, unc=half)
    u_lo, u_hi = _share(np.array([lo, hi]))
    frac = (1.0 - r_lo["rho"]) / (r_hi["rho"] - r_lo["rho"]) if r_hi["rho"] != r_lo["rho"] \
        else 0.5
    lam_star = float(from_coordinate(u_lo + min(max(frac, 0.0), 1.0) * (u_hi - u_lo), "lam"))
    ci = None
    if len(seeds) > 1:
        pts = sorted(history, key=lambda h: h["lam"])
        ci = bootstrap_crossing([h["lam"] for h in pts], np.array([h["rhos"] for h in pts]),
                                conf)
        ci = (min(ci[0], lam_star), max(ci[1], lam_star))
    if ci is None:
        unc = half
    elif math.isfinite(ci[1]):
        unc = math.hypot(half, (ci[1] - ci[0]) / (2 * 1.6448536269514722))
    else:
        unc = math.inf
    text = (f"λ* ≈ {fmt(lam_star, 4)} (" + (
        f"{round(100 * conf)} % CI [{fmt(ci[0], 4)}, {fmt(ci[1], 4)}] over {len(seeds)} seeds"
        if ci else "one seed: no statistical interval")
        + f"; bisection tolerance ± {fmt(half, 2)})")
    return done(lam_star, (lo, hi), "crossing", text, tolerance=half, ci=ci, unc=unc)
