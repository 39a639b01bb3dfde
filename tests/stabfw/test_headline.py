"""The headline: rows per λ, the λ* statement, the figure and `make run`'s printout."""

import html
import json
import math

import pytest

from stabfw.analysis.headline import (
    HEADLINE_KEYS,
    critical_statement,
    headline_row,
    sweep_headline,
)
from stabfw.reporting.figures import plot_headline


def _analysis(rho, verdict="stationary_noise", status="ok", ci=None, se=None):
    jac = {"spectral_radius": rho, "status": status, "method": "finite_difference",
           "at": "theta_star"}
    if ci is not None:
        jac.update(spectral_radius_ci=ci, spectral_radius_se=se, spectral_radii=[rho] * 5)
    return {"fixed_point": {"verdict": verdict, "verdict_reason": "because", "rate": rho,
                            "rate_ci": [rho - 0.01, rho + 0.01], "level": 0.1,
                            "limit_distance_to_theta_star": 0.0,
                            "collapsing_metrics": {"cov_trace": {"collapsing":
                                                                 verdict == "collapsing"}}},
            "jacobian": {"finite_difference": jac}}


def test_rows_have_the_contract_keys_theory_and_theorem1():
    row = headline_row(0.25, _analysis(0.2, ci=[0.18, 0.22], se=0.012),
                       theory="exponential_family", constants={"alpha": 1, "L": 0, "eps": 0})
    assert tuple(row) == HEADLINE_KEYS
    assert row["theory_rho"] == pytest.approx(0.2) and row["rho_seeds"] == 5
    # ε = 0: Theorem 1's ρ(λ) = λ/(1−λ) = 1/3 ≥ 0.2, condition 0.25 < 1/2 holds
    assert row["theorem1"]["bound"] == pytest.approx(1 / 3) and row["theorem1"]["consistent"]
    assert not row["theorem1"]["vacuous"] and row["stable"] is True
    assert "ρ(J) = 0.2 [0.18, 0.22] vs λ/(1+λ) = 0.2" in row["text"]
    vac = headline_row(1.0, _analysis(0.5), constants={"alpha": 1, "L": 0, "eps": 0})
    assert vac["theorem1"]["vacuous"] and "vacuous" in vac["text"]
    assert "one seed, no interval" in vac["text"]


def test_lambda_star_statements():
    rows = [headline_row(lam, _analysis(lam / (1 + lam)), theory="exponential_family")
            for lam in (0.0, 0.5, 1.0)]
    c = critical_statement(rows)
    assert c["status"] == "no_crossing" and c["lam_star"] is None
    assert c["text"] == "λ*: no crossing in the swept range [0, 1]"
    # a crossing between finite λ: ρ = 0.8 at λ = 1 (x = 1/2), 1.2 at λ = 3 (x = 3/4),
    # linear in x: x* = 5/8, λ* = 5/3
    rows = [headline_row(1.0, _analysis(0.8, ci=[0.7, 0.9], se=0.05)),
            headline_row(3.0, _analysis(1.2, ci=[1.1, 1.3], se=0.05))]
    c = critical_statement(rows)
    assert c["status"] == "crossing" and c["lam_star"] == pytest.approx(5 / 3)
    assert c["ci"][0] < 5 / 3 < c["ci"][1]
    # ρ > 1 only at λ = ∞ is not interpolated into a finite λ*
    rows = [headline_row(1.0, _analysis(0.5)), headline_row(math.inf, _analysis(1.1))]
    c = critical_statement(rows)
    assert c["status"] == "no_finite_crossing" and c["lam_star"] is None
    # a Jacobian that is not evidence is not used
    rows = [headline_row(1.0, _analysis(0.5)),
            headline_row(3.0, _analysis(2.0, status="not_differentiable"))]
    assert critical_statement(rows)["status"] == "no_crossing"
    given = {"lam_star": None, "ci": None, "tolerance": 0.02, "status": "no_crossing",
             "text": "no crossing in the swept range [0, 8]"}
    assert critical_statement(rows, given) == given


def test_headline_figure(tmp_path):
    h = sweep_headline([(lam, _analysis(lam / (1 + lam) if math.isfinite(lam) else 1.0,
                                        verdict="collapsing" if math.isinf(lam) else
                                        "stationary_noise"))
                        for lam in (0.0, 0.5, 1.0, math.inf)] +
                       [(2.0, _analysis(0.3, status="not_differentiable"))],
                       theory="exponential_family")
    assert [r["lam"] for r in h["rows"]] == [0.0, 0.5, 1.0, 2.0, math.inf]
    assert "cov_trace → 0" in h["rows"][-1]["text"]
    path = plot_headline(h, tmp_path / "headline.png", title="t")
    assert path.stat().st_size > 10_000


def test_default_config_leads_with_the_headline(tmp_path, capsys):
    from stabfw.cli import main

    out = tmp_path / "g"
    rc = main(["run", "configs/gaussian.yaml", "--out", str(out), "--set", "loop.seeds=20",
               "--set", "loop.generations=20", "--set", "analysis.jacobian.seeds=2",
               "--set", "output.progress=false", "--set", "sweep.backend=serial"])
    assert rc == 0
    h = json.loads((out / "summary.json").read_text())["headline"]
    assert [float(r["lam"]) for r in h["rows"]] == [0.0, 0.5, 1.0, math.inf]  # JSON: "inf"
    assert h["rows"][-1]["verdict"] == "collapsing"
    assert [r["theory_rho"] for r in h["rows"]] == pytest.approx([0.0, 1 / 3, 0.5, 1.0])
    assert h["critical"]["lam_star"] is None and "no" in h["critical"]["text"]
    # the default sweep has no critical λ: ρ = λ/(1+λ) < 1 at every finite λ
    assert h["critical"]["status"] == "no_crossing"
    assert h["critical"]["text"].startswith("λ*: no crossing in the swept range [0, ")
    for r in h["rows"]:  # two seeds per λ: an interval, and evidence (a smooth map)
        assert r["rho_seeds"] == 2 and r["rho_status"] == "ok", r
        if 0 < float(r["lam"]) < math.inf:
            assert r["rho_ci"][0] <= r["rho"] <= r["rho_ci"][1]
    assert json.loads((out / "stability.json").read_text())["headline"] == h
    assert (out / "headline.png").is_file()
    printed = capsys.readouterr().out
    assert "headline:" in printed and "λ = ∞: collapsing" in printed
    # the page opens with the summary card: a row per λ, the verdict in words and colour
    page = (out / "report.html").read_text()
    assert page.index('id="summary-card"') < page.index('id="figures"')
    assert page.count('<tr class="cell"') == 4
    assert 'badge bad">collapsing' in page
    assert html.escape(h["critical"]["text"], quote=True) in page
