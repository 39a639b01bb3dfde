"""The summary card a report page opens with: the headline of a run or a sweep in words.

Built from the headline rows of :mod:`stabfw.analysis.headline` (``summary.json``'s
``analysis.headline`` of a run, ``headline`` of a sweep). Every entry carries a short value,
a colour class and one line saying what the value means; what a headline lacks is said to
be "not measured" with the config field that would measure it. Nothing is recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stabfw._util.numbers import fmt
from stabfw.analysis.headline import NO_EVIDENCE

__all__ = ["VERDICT_WORDS", "summary_card"]

#: Verdict → (words, colour class, what it means).
VERDICT_WORDS: dict[str, tuple[str, str, str]] = {
    "converged": ("converges", "good",
                  "θ_t settles at a fixed point: the distance to it shrinks generation after "
                  "generation."),
    "stationary_noise": ("stable (noisy)", "good",
                         "θ_t fluctuates around its limit at a steady level: sampling noise, "
                         "no drift and no loss of diversity."),
    "collapsing": ("collapsing", "bad",
                   "a diversity metric heads to zero: the model loses the spread of the data "
                   "(model collapse)."),
    "diverging": ("diverging", "bad", "θ_t moves ever further away: the loop is unstable."),
    "oscillating": ("oscillating", "warn", "θ_t swings back and forth without settling."),
    "inconclusive": ("inconclusive", "muted",
                     "the evidence cannot tell stable from unstable here (more seeds or "
                     "generations would)."),
}

_NOT_MEASURED = "not measured"


def _lam(lam: Any) -> str:
    if lam is None:
        return "?"
    try:
        v = float(lam)
    except (TypeError, ValueError):
        return str(lam)
    return "∞" if math.isinf(v) else fmt(v, 4)


def _f(x: Any, digits: int = 3) -> str:
    return fmt(float(x), digits)


def _interval(ci: Sequence[Any] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{_f(ci[0])}, {_f(ci[1])}]"


def _entry(value: str, cls: str, meaning: str, detail: str = "") -> dict[str, str]:
    return {"value": value, "cls": cls, "meaning": meaning, "detail": detail}


def _verdict(row: Mapping[str, Any]) -> dict[str, str]:
    v = row.get("verdict")
    if not v:
        return _entry(_NOT_MEASURED, "muted", "add analysis.fixed_point to the config to get a "
                      "verdict from the trajectory.")
    words, cls, meaning = VERDICT_WORDS.get(v, (v, "muted", ""))
    if v == "collapsing" and row.get("collapsing_metrics"):
        meaning = (f"{', '.join(row['collapsing_metrics'])} heads to zero: the model loses the "
                   "spread of the data (model collapse).")
    return _entry(words, cls, meaning, row.get("verdict_reason") or "")


def _rho(row: Mapping[str, Any]) -> dict[str, str]:
    rho, status = row.get("rho"), row.get("rho_status")
    theory = row.get("theory_rho")
    th = "" if theory is None else f"theory λ/(1+λ) = {_f(theory)}"
    if status in NO_EVIDENCE:
        reason = row.get("rho_status_reason") or ""
        return _entry(f"not used: {status}", "muted",
                      "the Jacobian here is no evidence about stability"
                      + (f" ({reason})" if reason else "") + ".", th)
    if rho is None:
        return _entry(_NOT_MEASURED, "muted", "add analysis.jacobian to the config to measure "
                      "the local stability of θ*.", th)
    ci = row.get("rho_ci")
    value = f"ρ(J) = {_f(rho)}" + (_interval(ci) if ci else "")
    seeds = row.get("rho_seeds")
    how = f"{row.get('rho_method') or '?'}, " + (
        f"{seeds} seeds" if ci else "one seed, no interval")
    lo, hi = (float(ci[0]), float(ci[1])) if ci else (float(rho), float(rho))
    if hi < 1:
        cls, meaning = "good", (f"< 1: a small push away from θ* shrinks to ×{_f(rho)} per "
                                "generation — θ* is locally stable.")
    elif lo > 1:
        cls, meaning = "bad", (f"> 1: a small push away from θ* grows ×{_f(rho)} per "
                               "generation — θ* is locally unstable.")
    else:
        cls, meaning = "warn", "its interval contains 1: local stability is not decided."
    if theory is not None:
        if ci:
            agree = lo <= theory <= hi
            th += " (inside the interval)" if agree else " (outside the interval)"
        else:
            th += f" (measured − theory = {fmt(float(rho) - float(theory), 2)})"
    return _entry(value, cls, meaning, f"{how}; {th}" if th else how)


def _limit(row: Mapping[str, Any]) -> dict[str, str]:
    d = row.get("limit_distance_to_theta_star")
    rate, level = row.get("rate"), row.get("level")
    if d is None and rate is None:
        return _entry(_NOT_MEASURED, "muted", "add analysis.fixed_point to the config to "
                      "locate the loop's limit.")
    parts = []
    if d is not None:
        parts.append(f"‖θ̂_∞ − θ*‖ = {_f(d)}")
    detail = []
    if rate is not None:
        detail.append(f"rate {_f(rate)}{_interval(row.get('rate_ci'))} per generation")
    if level is not None:
        detail.append(f"spread around the limit {_f(level)}")
    meaning = "the loop's own limit θ̂_∞ lies this far from θ* (the fit to real data only)"
    if rate is not None:
        meaning += f"; deviations from it decay ×{_f(rate)} per generation"
    return _entry(parts[0] if parts else "limit not located", "", meaning + ".",
                  "; ".join(detail))


def _theorem1(row: Mapping[str, Any]) -> dict[str, str]:
    t = row.get("theorem1")
    if not t:
        return _entry(_NOT_MEASURED, "muted", "set analysis.jacobian.bounds to estimate "
                      "α, L, ε and check Theorem 1's sufficient condition.")
    if t.get("vacuous"):
        return _entry("vacuous", "muted", "its condition λ(1 + Lε/α) < 1/2 fails, so it "
                      "guarantees nothing here — which is not evidence of instability.",
                      t.get("text", ""))
    bound = t.get("bound")
    b = "" if bound is None else f" (bound {_f(bound)})"
    if t.get("consistent") is True:
        return _entry("consistent" + b, "good", "the theorem guarantees contraction at "
                      "least this fast, and the measured ρ(J) agrees.", t.get("text", ""))
    if t.get("consistent") is False:
        return _entry("violated" + b, "bad", "the measured ρ(J) exceeds the guaranteed rate: "
                      "the estimated constants or the measurement are off.", t.get("text", ""))
    return _entry("bound" + b, "", "the contraction rate the theorem guarantees (no measured "
                  "ρ(J) to compare).", t.get("text", ""))


def _critical(critical: Mapping[str, Any] | None, n_rows: int) -> dict[str, str]:
    if not critical:
        return _entry(_NOT_MEASURED, "muted", "sweep loop.lam with an analysis: section to "
                      "locate the critical λ*.")
    status = critical.get("status")
    text = critical.get("text") or ""
    if status == "crossing" and critical.get("lam_star") is not None:
        ls = float(critical["lam_star"])
        share = ls / (1 + ls)
        return _entry(text, "warn", f"ρ(J) crosses 1 here: below λ* (a synthetic share under "
                      f"{100 * share:.0f} % of the training set) θ* is locally stable, above "
                      "it unstable.")
    if n_rows <= 1:
        return _entry("needs a sweep over λ", "muted", "one λ only: sweep loop.lam to "
                      "locate λ*.", text)
    meaning = {
        "no_crossing": "ρ(J) < 1 at every λ swept: no tested share of synthetic data "
                       "destabilises θ*.",
        "no_finite_crossing": "stable at every finite λ swept; only the fully synthetic "
                              "loop (λ = ∞, no real data) is unstable.",
        "unstable_throughout": "ρ(J) > 1 at every λ swept: θ* is unstable throughout.",
        "no_evidence": "no ρ(J) that is evidence, so λ* cannot be located.",
    }.get(status or "", "")
    cls = {"no_crossing": "good", "no_finite_crossing": "good",
           "unstable_throughout": "bad"}.get(status or "", "muted")
    return _entry(text or _NOT_MEASURED, cls, meaning)


def _overall(rows: list[Mapping[str, Any]]) -> str:
    """One sentence: the λ of each verdict, in the order of the rows."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        words = VERDICT_WORDS.get(r.get("verdict") or "", (_NOT_MEASURED,))[0]
        groups.setdefault(words, []).append(_lam(r.get("lam")))
    parts = [f"{w} at λ = {', '.join(lams)}" for w, lams in groups.items()]
    return (parts[0][0].upper() + "; ".join(parts)[1:] + ".") if parts else ""


def summary_card(headline: Mapping[str, Any] | None,
                 lams: Sequence[Any] = ()) -> dict[str, Any]:
    """The summary card of a headline, ready for the page's template.

    Parameters
    ----------
    headline : mapping or None
        ``{"rows": [...], "critical": {...}}`` as :func:`~stabfw.analysis.headline.run_headline`
        and :func:`~stabfw.analysis.headline.sweep_headline` return it; None when the run
        had no analysis.
    lams : sequence
        The λ of the run or of the sweep's cells, for rows when there is no headline.

    Returns
    -------
    dict
        ``measured`` (whether there was a headline), ``overall`` (one sentence),
        ``rows`` (per λ: ``lam``, ``verdict``, ``rho``, ``limit``, ``theorem1``, each an
        entry ``{value, cls, meaning, detail}``; and ``text``) and ``critical`` (an entry).
    """
    raw = list((headline or {}).get("rows") or [])
    if not raw:
        raw = [{"lam": lam} for lam in lams] or [{"lam": None}]
    rows = [{"lam": _lam(r.get("lam")), "verdict": _verdict(r), "rho": _rho(r),
             "limit": _limit(r), "theorem1": _theorem1(r), "text": r.get("text", "")}
            for r in raw]
    return {"measured": bool(headline and headline.get("rows")),
            "overall": _overall(raw) if headline else "",
            "rows": rows, "critical": _critical((headline or {}).get("critical"), len(raw))}
