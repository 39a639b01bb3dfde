"""The headline of a run or a sweep: per λ the verdict, ρ(J) with its interval against
the closed form λ/(1+λ), Theorem 1's bound (vacuous where it is), and one statement about
the critical λ*.

Built from the JSON-ready results of :func:`stabfw.analysis.pipeline.analyze_run` (one row
per run, or per sweep cell), so a saved run's headline can be rebuilt without recomputing.
Rows have the keys of :data:`HEADLINE_KEYS`; the Jacobian fields are read with fallbacks,
so results written before ρ(J) carried seeds or a status still give a headline (``rho_ci``
is then ``None`` and the text says "one seed, no interval").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from stabfw._util.numbers import fmt
from stabfw.analysis.bounds import theorem1_report

__all__ = ["HEADLINE_KEYS", "critical_statement", "headline_row", "run_headline",
           "sweep_headline", "theory_for"]

#: The keys of one headline row, in display order.
HEADLINE_KEYS = ("lam", "verdict", "verdict_reason", "stable", "rate", "rate_ci", "level",
                 "limit_distance_to_theta_star", "collapsing_metrics", "rho", "rho_ci",
                 "rho_se", "rho_seeds", "rho_method", "rho_at", "rho_status",
                 "rho_status_reason", "theory_rho", "theorem1", "text")

#: Jacobian statuses that count as no evidence about stability.
NO_EVIDENCE = ("not_differentiable", "ill_conditioned")

_STABLE = ("converged", "stationary_noise")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if not math.isnan(v) else None


def _lam_text(lam: float | None) -> str:
    return "?" if lam is None else ("∞" if math.isinf(lam) else fmt(lam, 4))


def _pick_jacobian(jac: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """The method to headline: the first whose status is ok, else the first."""
    items = [(k, v) for k, v in (jac or {}).items() if isinstance(v, Mapping)]
    for k, v in items:
        if v.get("status", "ok") == "ok" and _num(v.get("spectral_radius")) is not None:
            return k, dict(v)
    return (items[0][0], dict(items[0][1])) if items else (None, {})


def _theorem1(lam: float | None, rho: float | None, r: Mapping[str, Any],
              constants: Mapping[str, float] | None) -> dict[str, Any] | None:
    b = r.get("bounds") or {}
    if constants is None and _num(b.get("alpha")) is not None:
        constants = {"alpha": b["alpha"], "L": b["L"], "eps": b["eps"]}
    if constants is None or lam is None:
        return None
    if math.isinf(lam):
        return {"bound": None, "consistent": None, "vacuous": True,
                "text": "Theorem 1 is vacuous at λ = ∞ (its condition λ(1 + Lε/α) < 1/2 fails)"}
    rep = theorem1_report(lam, float(constants["alpha"]), float(constants["L"]),
                          float(constants["eps"]), measured_rho=rho)
    if rep["vacuous"]:
        text = (f"Theorem 1 is vacuous at λ = {_lam_text(lam)} (λ(1 + Lε/α) = "
                f"{fmt(rep['condition_value'], 3)} ≥ 1/2)")
    else:
        ok = rep.get("consistent")
        text = (f"Theorem 1 bounds ρ by {fmt(rep['rate'], 3)}"
                + ("" if ok is None else (" (holds)" if ok else " (violated by the measured ρ)")))
    return {"bound": rep["rate"], "consistent": rep.get("consistent"),
            "vacuous": rep["vacuous"], "text": text}


def headline_row(lam: float | None, analysis: Mapping[str, Any],
                 theory: str | None = None,
                 constants: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One headline row from one run's analyzer results.

    Parameters
    ----------
    lam : float or None
        The run's λ.
    analysis : mapping
        What :func:`~stabfw.analysis.pipeline.analyze_run` returned.
    theory : {"exponential_family", None}
        ``exponential_family``: the infinite-sample ρ(J) = λ/(1+λ) (Gaussian, categorical,
        Poisson, … refitted by maximum likelihood on fixed real data); None: no closed form.
    constants : mapping, optional
        Theorem 1's α, L, ε (else those the Jacobian analyzer estimated, if any).
    """
    fp = dict(analysis.get("fixed_point") or {})
    method, r = _pick_jacobian(analysis.get("jacobian"))
    rho = _num(r.get("spectral_radius"))
    rho_ci = r.get("spectral_radius_ci")
    rho_ci = [float(rho_ci[0]), float(rho_ci[1])] if rho_ci else None
    radii = r.get("spectral_radii")
    seeds = r.get("seeds")
    n_seeds = len(radii) if radii else (len(seeds) if isinstance(seeds, list) else
                                         (1 if rho is not None else None))
    status = r.get("status", "ok") if r else None
    theory_rho = None
    if theory == "exponential_family" and lam is not None:
        theory_rho = 1.0 if math.isinf(lam) else lam / (1 + lam)
    thm = _theorem1(lam, rho, r, constants) if r else None
    verdict = fp.get("verdict")
    stable = None if verdict in (None, "inconclusive") else verdict in _STABLE
    row = {
        "lam": lam, "verdict": verdict,
        "verdict_reason": fp.get("verdict_reason", fp.get("reason")),
        "stable": stable, "rate": _num(fp.get("rate")), "rate_ci": fp.get("rate_ci"),
        "level": _num(fp.get("level")),
        "limit_distance_to_theta_star": _num(fp.get("limit_distance_to_theta_star")),
        "collapsing_metrics": sorted(k for k, v in (fp.get("collapsing_metrics") or {}).items()
                                     if v.get("collapsing")),
        "rho": rho, "rho_ci": rho_ci, "rho_se": _num(r.get("spectral_radius_se")),
        "rho_seeds": n_seeds, "rho_method": r.get("method", method) if r else None,
        "rho_at": r.get("at") if r else None, "rho_status": status,
        "rho_status_reason": r.get("status_reason") if r else None,
        "theory_rho": theory_rho, "theorem1": thm,
    }
    row["text"] = _row_text(row)
    return row


def _row_text(row: Mapping[str, Any]) -> str:
    who = "the loop" if row["lam"] is None else f"λ = {_lam_text(row['lam'])}"
    parts = [f"{who}: {row['verdict'] or 'no verdict'}"]
    if row["verdict"] == "collapsing" and row["collapsing_metrics"]:
        parts[0] += f" ({', '.join(row['collapsing_metrics'])} → 0)"
    rate, rci = row["rate"], row["rate_ci"]
    if rate is not None and rci and _num(rci[0]) is not None:
        parts.append(f"rate {fmt(rate, 3)} [{fmt(rci[0], 3)}, {fmt(rci[1], 3)}]")
    rho = row["rho"]
    if row["rho_status"] in NO_EVIDENCE:
        parts.append(f"ρ(J) not used: {row['rho_status']}"
                     + (f" ({row['rho_status_reason']})" if row["rho_status_reason"] else ""))
    elif rho is not None:
        ci = row["rho_ci"]
        s = f"ρ(J) = {fmt(rho, 3)}" + (f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci
                                         else " (one seed, no interval)")
        if row["theory_rho"] is not None:
            s += f" vs λ/(1+λ) = {fmt(row['theory_rho'], 3)}"
        parts.append(s)
    if row["theorem1"]:
        parts.append(row["theorem1"]["text"])
    return "; ".join(parts) + "."


def critical_statement(rows: Iterable[Mapping[str, Any]],
                       computed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The λ* statement of a set of rows.

    ``computed`` (a ``critical_lambda`` result: ``lam_star``, ``ci``, ``tolerance``,
    ``status``, ``text``) is used as it is when given. Otherwise the crossing of ρ(J) = 1
    is read off the rows: only rows whose ρ(J) is evidence (status ok), interpolated
    linearly in λ/(1+λ) between two *finite* swept λ, with the delta-method interval from
    the rows' standard errors where they have them; a crossing only towards λ = ∞, or
    none, is said in words.
    """
    if computed:
        out = {k: computed.get(k) for k in ("lam_star", "ci", "tolerance", "status", "text")}
        if not out.get("text"):
            lo_hi = computed.get("bracket") or [None, None]
            out["text"] = (f"λ* = {fmt(computed.get('lam_star'))}"
                           if computed.get("lam_star") is not None else
                           f"no crossing in the swept range [{_lam_text(lo_hi[0])}, "
                           f"{_lam_text(lo_hi[1])}]")
        return out
    pts = sorted(((r["lam"], r["rho"], r.get("rho_se"), r.get("rho_ci")) for r in rows
                  if r.get("lam") is not None and r.get("rho") is not None
                  and r.get("rho_status", "ok") not in NO_EVIDENCE), key=lambda p: p[0])
    base = {"lam_star": None, "ci": None, "tolerance": None}
    if not pts:
        return {**base, "status": "no_evidence",
                "text": "λ*: no ρ(J) to locate it (no Jacobian, or none that is evidence)"}
    lo, hi = pts[0][0], pts[-1][0]
    rng = f"[{_lam_text(lo)}, {_lam_text(hi)}]"

    def above(p) -> bool:  # ρ > 1, by its interval when it has one
        return (p[3][0] > 1) if p[3] else p[1] > 1

    def share(lam: float) -> float:
        return 1.0 if math.isinf(lam) else lam / (1 + lam)

    finite = [p for p in pts if math.isfinite(p[0])]
    for a, b in itertools.pairwise(finite):
        if (a[1] - 1) * (b[1] - 1) <= 0 and (above(a) or above(b)) and a[1] != b[1]:
            xa, xb = share(a[0]), share(b[0])
            w = (1 - a[1]) / (b[1] - a[1])
            x = xa + w * (xb - xa)
            lam_star = x / (1 - x)
            ci = None
            if a[2] is not None and b[2] is not None:
                # delta method on x* = xa + (1 − ρa)(xb − xa)/(ρb − ρa)
                dxa = -(xb - xa) * (b[1] - 1) / (b[1] - a[1]) ** 2
                dxb = (xb - xa) * (a[1] - 1) / (b[1] - a[1]) ** 2
                se = math.hypot(dxa * a[2], dxb * b[2])
                xl, xh = max(x - 1.645 * se, 0.0), min(x + 1.645 * se, 0.999999)
                ci = [xl / (1 - xl), xh / (1 - xh)]
            text = (f"λ* ≈ {fmt(lam_star, 3)}" + (f" (90 % CI [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}])"
                                                  if ci else " (no interval: one seed)")
                    + f", between λ = {_lam_text(a[0])} and {_lam_text(b[0])}")
            return {**base, "lam_star": lam_star, "ci": ci, "status": "crossing", "text": text}
    inf_pts = [p for p in pts if math.isinf(p[0])]
    if inf_pts and above(inf_pts[0]) and finite and not any(above(p) for p in finite):
        fr = f"[{_lam_text(finite[0][0])}, {_lam_text(finite[-1][0])}]"
        return {**base, "status": "no_finite_crossing",
                "text": f"λ*: no crossing at finite λ in the swept range {fr}; ρ(J) = "
                        f"{fmt(inf_pts[0][1], 3)} > 1 only in the fully synthetic loop (λ = ∞)"}
    if all(not above(p) for p in pts):
        return {**base, "status": "no_crossing",
                "text": f"λ*: no crossing in the swept range {rng}"}
    return {**base, "status": "unstable_throughout",
            "text": f"λ*: ρ(J) > 1 throughout the swept range {rng}"}


def run_headline(analysis: Mapping[str, Any], lam: float | None, theory: str | None = None,
                 constants: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The headline of one run: ``{"rows": [row], "critical": ...}``."""
    row = headline_row(lam, analysis, theory, constants)
    return {"rows": [row],
            "critical": critical_statement([row], analysis.get("critical_lambda"))}


def sweep_headline(cells: Iterable[tuple[float | None, Mapping[str, Any]]],
                   theory: str | None = None,
                   constants: Mapping[str, float] | None = None,
                   computed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The headline of a sweep over λ: one row per cell (sorted by λ) and the λ*
    statement across them."""
    rows = sorted((headline_row(lam, a, theory, constants) for lam, a in cells),
                  key=lambda r: (r["lam"] is None, r["lam"] if r["lam"] is not None else 0))
    return {"rows": rows, "critical": critical_statement(rows, computed)}


def theory_for(domain: str, policy: str) -> str | None:
    """The closed form a domain's ρ(J) has, if any: ``exponential_family`` for the
    Gaussian refitted by maximum likelihood on fixed real data."""
    return "exponential_family" if domain == "gaussian" and policy == "fixed_real" else None
