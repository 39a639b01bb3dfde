"""The critical λ: where the measured spectral radius (or the trajectory verdict) crosses 1.

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

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["CriticalLambda", "critical_lambda"]

UNSTABLE = ("diverging", "collapsing", "oscillating")


@dataclass(frozen=True)
class CriticalLambda:
    """Where the loop turns unstable.

    Attributes
    ----------
    lam_star : float
        The critical λ (``inf`` when the loop is stable over the whole search range,
        ``0`` when it is unstable already at the lower end).
    bracket : (float, float)
        The final stable / unstable λ.
    uncertainty : float
        Half-width of the bracket combined (in quadrature) with the effect of the seed
        spread of ρ (spectral-radius criterion).
    status : {"crossing", "stable_throughout", "unstable_throughout"}
    criterion : {"spectral_radius", "verdict"}
    history : list of dict
        Every λ evaluated: its value(s) of ρ or verdicts.
    n_evaluations : int
        λ values evaluated.
    wall_time : float
    """

    lam_star: float
    bracket: tuple[float, float]
    uncertainty: float
    status: str
    criterion: str
    history: list[dict[str, Any]] = field(default_factory=list)
    n_evaluations: int = 0
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""

        def f(x: float) -> float | str:
            return float(x) if math.isfinite(x) else ("inf" if x > 0 else "-inf")

        return {"lam_star": f(self.lam_star), "bracket": [f(self.bracket[0]), f(self.bracket[1])],
                "uncertainty": f(self.uncertainty), "status": self.status,
                "criterion": self.criterion, "n_evaluations": self.n_evaluations,
                "wall_time": round(self.wall_time, 3), "history": self.history}


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
        default ``finite_difference`` where ``with_params`` exists). ``verdict``: a run of
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
    from stabfw.config import RetrainConfig

    cfg = config if isinstance(config, RetrainConfig) else RetrainConfig.model_validate(config)
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
    maps: dict[int, Any] = {}
    seeds = cfg.seed_list[:n_replicates]
    if len(seeds) < n_replicates:
        seeds = list(range(n_replicates))

    def at(lam: float) -> dict[str, Any]:
        c = cfg.model_copy(update={"lam": lam})
        if criterion == "spectral_radius":
            from stabfw.fixed_point import RetrainingMap
            from stabfw.jacobian import JacobianAnalyzer

            rhos = []
            for s in seeds:
                an = analyzer or JacobianAnalyzer(
                    method="finite_difference" if getattr(loop, "supports_with_params", False)
                    else "auto", k=2, bounds=False, norm=False)
                an = _with_seed(an, s)
                if s not in maps:  # θ* is fitted once per seed, whatever λ
                    maps[s] = RetrainingMap(loop, cfg, seed=s)
                rhos.append(an.analyze(loop, c, retraining_map=maps[s].with_lam(lam))
                            .spectral_radius)
            rho = float(np.mean(rhos))
            se = float(np.std(rhos, ddof=1) / math.sqrt(len(rhos))) if len(rhos) > 1 else 0.0
            rec = {"lam": lam, "rho": rho, "rho_se": se, "rhos": [float(r) for r in rhos],
                   "unstable": rho >= 1.0}
        else:
            from stabfw.fixed_point import FixedPointAnalyzer
            from stabfw.runner import run_loop

            fp = (fixed_point_analyzer or FixedPointAnalyzer()).analyze(run_loop(loop, c))
            rec = {"lam": lam, "verdict": fp.verdict, "rate": float(fp.rate),
                   "unstable": fp.verdict in UNSTABLE}
        history.append(rec)
        return rec

    r_lo = at(lo)
    if r_lo["unstable"]:
        return CriticalLambda(lo, (lo, lo), 0.0, "unstable_throughout", criterion, history,
                              len(history), time.perf_counter() - t0)
    r_hi = at(hi)
    while not r_hi["unstable"]:
        if hi >= max_lam:
            return CriticalLambda(math.inf, (hi, math.inf), math.inf, "stable_throughout",
                                  criterion, history, len(history), time.perf_counter() - t0)
        lo, r_lo = hi, r_hi
        hi = min(2 * hi, max_lam)
        r_hi = at(hi)
    for _ in range(max_iter):
        if hi - lo <= tol * max(1.0, lo):
            break
        mid = 0.5 * (lo + hi)
        r_mid = at(mid)
        if r_mid["unstable"]:
            hi, r_hi = mid, r_mid
        else:
            lo, r_lo = mid, r_mid
    half = 0.5 * (hi - lo)
    if criterion == "spectral_radius":
        slope = (r_hi["rho"] - r_lo["rho"]) / (hi - lo)
        frac = (1.0 - r_lo["rho"]) / (r_hi["rho"] - r_lo["rho"]) if r_hi["rho"] != r_lo["rho"] else 0.5
        lam_star = lo + min(max(frac, 0.0), 1.0) * (hi - lo)
        se = max(r_lo["rho_se"], r_hi["rho_se"])
        unc = math.hypot(half, se / slope if slope > 0 else math.inf if se > 0 else 0.0)
    else:
        lam_star, unc = 0.5 * (lo + hi), half
    return CriticalLambda(lam_star, (lo, hi), unc, "crossing", criterion, history, len(history),
                          time.perf_counter() - t0)


def _with_seed(analyzer: Any, seed: int) -> Any:
    import copy

    an = copy.copy(analyzer)
    an.seed = seed
    return an
