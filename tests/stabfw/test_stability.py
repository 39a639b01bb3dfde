"""Critical values and stability diagrams, against closed forms.

λ* on the Gaussian domain: for the fixed-real policy the infinite-sample spectral radius
is λ/(1+λ) < 1 for every finite λ (REFERENCE_CASES C1), so nothing crosses 1 along λ.
The fully synthetic loop has a real crossing along the sample size n instead: the fitted
log-variance drifts by r(n) = ψ((n−1)/2) + log(2/n) per generation (C5), always < 0 (it
always collapses), and the question "from which n does the variance keep half of itself
over H generations?" has the critical value n* solving r(n*) = −log 2 / H.
"""

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import digamma, polygamma

from stabfw.analysis.critical import critical_from_labels, critical_value
from stabfw.errors import ConfigError
from stabfw.experiments.stability import cell_table, find_critical, write_stability
from stabfw.experiments.sweep import run_sweep
from stabfw.run.config import parse_config


# --- interpolation and its uncertainty ----------------------------------------------
def test_crossing_of_a_linear_quantity_is_exact():
    x = [0.0, 1.0, 2.0, 3.0]
    y = [0.2, 0.6, 1.0, 1.4]  # y = 0.2 + 0.4x: crosses 1 on the grid point x = 2
    cv = critical_value(x, y, threshold=1.0)
    assert cv.value == pytest.approx(2.0) and cv.stderr == 0.0
    cv = critical_value(x, [0.2 + 0.4 * v for v in x], threshold=0.7)
    assert cv.status == "crossing" and cv.value == pytest.approx(1.25)
    assert cv.bracket == (1.0, 2.0)


def test_delta_method_stderr_matches_monte_carlo():
    rng = np.random.default_rng(0)
    x = np.array([1.0, 2.0, 3.0])
    mean = np.array([0.5, 0.8, 1.3])
    se = np.array([0.02, 0.03, 0.04])
    cv = critical_value(x, mean, se, threshold=1.0)
    # the crossing of each noisy draw, computed independently
    ys = mean + se * rng.standard_normal((40_000, 3))
    xs = 2.0 + (1.0 - ys[:, 1]) / (ys[:, 2] - ys[:, 1])
    assert cv.value == pytest.approx(2.0 + 0.2 / 0.5)
    # standard error of a standard deviation from 40 000 draws: ~0.4 %
    assert cv.stderr == pytest.approx(xs.std(), rel=0.03)


def test_lambda_scale_makes_exponential_family_rates_exact_and_handles_infinity():
    lam = np.array([0.0, 0.5, 2.0, math.inf])
    # twice the exponential-family ρ = λ/(1+λ): linear in λ/(1+λ), crosses 1 at λ = 1
    rho = 2 * np.array([0.0, 1 / 3, 2 / 3, 1.0])
    cv = critical_value(lam, rho, threshold=1.0, xscale="lam")
    assert cv.value == pytest.approx(1.0) and cv.bracket == (0.5, 2.0)
    below = critical_value(lam, rho / 4, threshold=1.0, xscale="lam")
    assert below.value is None and below.status == "below"
    assert "no crossing" in below.describe()


def test_several_crossings_are_all_reported():
    cv = critical_value([0, 1, 2, 3], [0, 2, 0, 2], threshold=1.0)
    assert cv.status == "multiple" and cv.crossings == pytest.approx([0.5, 1.5, 2.5])


def test_critical_from_verdicts_is_the_bracket_midpoint():
    cv = critical_from_labels([0.0, 0.25, 0.5, 1.0], [False, False, True, True])
    assert cv.value == pytest.approx(0.375) and cv.bracket == (0.25, 0.5)
    assert cv.stderr == pytest.approx(0.125 / math.sqrt(3))
    assert critical_from_labels([1, 2], [True, True]).status == "above"


# --- the Gaussian collapse threshold ------------------------------------------------
H, T, SEEDS = 20, 20, 2000
NS = [40, 50, 56, 62, 70, 80]


def _r(n):
    """E[log σ²_{t+1} − log σ²_t] of the fully synthetic MLE loop (REFERENCE_CASES C5)."""
    return digamma((n - 1) / 2) + np.log(2 / n)


@pytest.fixture(scope="module")
def collapse_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse")
    cfg = parse_config({
        "domain": {"name": "gaussian", "dim": 1, "covariance": "full", "ddof": 0},
        "loop": {"policy": "fully_synthetic", "generations": T, "seeds": SEEDS},
        "output": {"report": False, "progress": False},
        "sweep": {"grid": {"domain.n": NS}, "backend": "serial",
                  "stability": {"axis": "domain.n", "quantity": "drift:cov_logdet",
                                "threshold": -math.log(2) / H, "xscale": "inverse"}},
    })
    run_sweep(cfg, out)
    return out


def test_cell_drift_and_its_stderr_match_the_closed_form(collapse_sweep):
    table = cell_table(collapse_sweep, "drift:cov_logdet")
    for _, row in table.iterrows():
        n = row["domain.n"]
        # per seed, the drift is a mean of T independent log χ²_{n−1}/n terms
        sd = math.sqrt(float(polygamma(1, (n - 1) / 2)) / T)
        assert row["stderr"] == pytest.approx(sd / math.sqrt(SEEDS), rel=0.1)
        assert abs(row["value"] - _r(n)) < 4 * row["stderr"], (n, row["value"], _r(n))


def test_critical_sample_size_equals_the_closed_form_within_its_stderr(collapse_sweep):
    threshold = -math.log(2) / H
    n_star = brentq(lambda n: _r(n) - threshold, 5, 1000)  # ≈ 58.6
    (cv,) = find_critical(collapse_sweep, "domain.n", "drift:cov_logdet", threshold, "inverse")
    assert cv.status == "crossing" and cv.bracket == (56.0, 62.0)
    assert 0.3 < cv.stderr < 3.0  # informative, and the comparison below can fail
    assert abs(cv.value - n_star) < 4 * cv.stderr, (cv.value, cv.stderr, n_star)
    # the sweep computed the same from its spec without plots (output.report is off)
    found = json.loads((collapse_sweep / "stability.json").read_text())
    assert found["critical"][0]["value"] == pytest.approx(cv.value)
    assert found["figures"] == []


# --- diagrams from analyzer results -------------------------------------------------
@pytest.fixture(scope="module")
def lam_sweep(tmp_path_factory):
    """A λ × n sweep whose cells carry analyzer results as an analyzer would write them."""
    out = tmp_path_factory.mktemp("lam")
    cfg = parse_config({
        "domain": {"name": "gaussian", "dim": 1},
        "loop": {"generations": 3, "seeds": 4},
        "output": {"report": False, "progress": False},
        "sweep": {"grid": {"loop.lam": [0, 0.5, 2, ".inf"], "domain.n": [10, 40]},
                  "backend": "serial"},
    })
    run_sweep(cfg, out)
    for d in (out / "cells").iterdir():
        summary = json.loads((d / "summary.json").read_text())
        lam = float(summary["config"]["loop"]["lam"])
        n = summary["config"]["domain"]["n"]
        # a made-up analyzer: ρ = (1 + 10/n) λ/(1+λ), crossing 1 at λ* = n/10
        share = 1.0 if math.isinf(lam) else lam / (1 + lam)
        rho = (1 + 10 / n) * share
        summary["analysis"] = {"jacobian": {"spectral_radius": rho, "method": "dense",
                                            "bounds": {"alpha": 1.0, "L": 2.0, "eps": 0.1}},
                               "fixed_point": {"verdict": "diverging" if rho > 1 else
                                               "stationary_noise", "rate": rho}}
        (d / "summary.json").write_text(json.dumps(summary))
    return out, cfg


def test_critical_lambda_from_spectral_radius_and_from_verdicts(lam_sweep):
    out, _ = lam_sweep
    by_n = {cv.group["domain.n"]: cv for cv in
            find_critical(out, "loop.lam", "analysis:jacobian.spectral_radius", 1.0)}
    assert by_n[10].value == pytest.approx(1.0)  # exact: ρ is linear in λ/(1+λ)
    assert by_n[40].value == pytest.approx(4.0)
    assert by_n[40].bracket == (2.0, math.inf)
    verdict = {cv.group["domain.n"]: cv for cv in find_critical(out, "loop.lam", "verdict")}
    assert verdict[10].bracket == (0.5, 2.0) and verdict[40].bracket == (2.0, math.inf)


def test_write_stability_draws_the_diagrams(lam_sweep):
    out, cfg = lam_sweep
    found = write_stability(out, cfg.sweep)
    assert found["quantity"] == "analysis:jacobian.spectral_radius"  # found by itself
    assert sorted(found["figures"]) == ["heatmap.png", "rho_vs_lambda.png", "stability.png"]
    for name in found["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = [c["text"] for c in found["critical"]]
    assert any(t.startswith("lam* = 1 ±") for t in texts), texts


def test_heatmap_values_are_the_cells_means(lam_sweep):
    out, _ = lam_sweep
    import pandas as pd

    table = cell_table(out, "final:mean_sq_err_true")
    for _, row in table.iterrows():
        m = pd.read_csv(out / "cells" / row["cell"] / "metrics.csv")
        assert row["value"] == pytest.approx(m[m["generation"] == 3]["mean_sq_err_true"].mean())
        assert row["n"] == 4


def test_spec_errors_name_the_field():
    def spec(**kw):
        return parse_config({"domain": {"name": "gaussian"},
                             "sweep": {"grid": {"loop.lam": [0, 1], "loop.policy":
                                                ["fixed_real", "accumulate"]},
                                       "stability": kw}}).sweep

    assert spec().stability_axis() == "loop.lam"
    with pytest.raises(ConfigError, match=r"sweep\.stability\.axis.*domain\.n"):
        spec(axis="domain.n")
    with pytest.raises(ConfigError, match=r"sweep\.stability\.axis.*non-numeric"):
        spec(axis="loop.policy")
    with pytest.raises(ConfigError, match=r"sweep\.stability\.quantity.*final:<metric>"):
        spec(quantity="mean")
    with pytest.raises(ConfigError, match=r"sweep\.stability\.xscale"):
        spec(xscale="cubic")
    with pytest.raises(ConfigError, match=r"sweep\.stability\.treshold.*not permitted"):
        spec(treshold=1)
