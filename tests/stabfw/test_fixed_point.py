"""FixedPointAnalyzer: verdicts, rates and levels on loops with closed forms (C5–C7)."""

import math

import numpy as np
import pytest
from reference_loops import BernoulliCoin

import stabfw
from stabfw.analysis.fixed_point import FixedPointAnalyzer
from stabfw.domains.gaussian import GaussianLoop


def _ar_paths(J, c, seeds=40, T=60, noise=0.0, x0=None, seed=0):
    """θ_{t+1} = c + J(θ_t − c) + noise, from x0 (default: c + 1)."""
    rng = np.random.default_rng(seed)
    J = np.atleast_2d(J)
    d = J.shape[0]
    X = np.zeros((seeds, T + 1, d))
    X[:, 0] = (np.asarray(c) + 1.0) if x0 is None else x0
    for t in range(T):
        X[:, t + 1] = c + (X[:, t] - c) @ J.T + noise * rng.standard_normal((seeds, d))
    return X


def test_gaussian_mean_lambda_mixing_is_stationary_noise_with_rate_lambda_over_one_plus_lambda():
    """C6: Gaussian mean, known σ = 1, n = 50, λ = 1: AR(1) with coefficient 1/2 around x̄,
    stationary Var θ_∞ = λσ²/(n(1+2λ)) = 0.006667."""
    cfg = stabfw.RetrainConfig(lam=1.0, generations=60, seeds=300)
    traj = stabfw.run_loop(GaussianLoop(dim=1, n=50, covariance="known"), cfg)
    fp = FixedPointAnalyzer().analyze(traj)
    assert fp.verdict == "stationary_noise", fp.reason
    assert fp.rate_ci[0] < 0.5 < fp.rate_ci[1]
    assert abs(fp.rate - 0.5) < 0.05
    # θ* = x̄ and E θ_∞ = x̄: the stationary mean squared distance is the stationary variance.
    # Its estimate pools 300 seeds × 20 generations with lag-1 correlation 1/2 (≈ 12 effective
    # draws per seed): relative standard error √(2/3600) ≈ 2.4 %, so 4 SE ≈ 10 %.
    assert fp.stationary_level**2 == pytest.approx(1.0 / (50 * 3), rel=0.10)
    assert fp.distance_mean.shape == (61,) and fp.distance_mean[0] == 0.0
    assert fp.to_dict()["verdict"] == "stationary_noise"


def test_api_sketch_bernoulli_coin():
    cfg = stabfw.RetrainConfig(lam=1.0, generations=40, seeds=100)
    fp = stabfw.FixedPointAnalyzer().analyze(stabfw.run_loop(BernoulliCoin(), cfg))
    assert fp.verdict == "stationary_noise"
    assert fp.rate_ci[0] < 0.5 < fp.rate_ci[1]


def test_fully_synthetic_gaussian_collapses_in_theta_and_in_its_variance():
    """C5: fully synthetic ML variance decays like ((n−1)/n)^t in mean and to 0 a.s."""
    cfg = stabfw.RetrainConfig(policy="fully_synthetic", generations=100, seeds=100)
    traj = stabfw.run_loop(GaussianLoop(dim=2, n=20), cfg)
    fa = FixedPointAnalyzer()
    assert fa.analyze(traj).verdict == "collapsing"
    var = fa.analyze(traj, metric="cov_trace")
    assert var.verdict == "collapsing", var.reason
    assert var.evidence["final_over_initial"] < 1e-2


def test_fully_synthetic_mean_random_walk_diverges():
    """C7 (replace): E‖μ_t − μ*‖² = (t+1)dσ²/n grows without bound."""
    cfg = stabfw.RetrainConfig(policy="fully_synthetic", generations=80, seeds=200)
    fp = FixedPointAnalyzer().analyze(stabfw.run_loop(GaussianLoop(dim=1, n=20,
                                                                   covariance="known"), cfg))
    assert fp.verdict == "diverging", fp.reason
    # the mean squared distance grows like t·σ²/n (here without the +1: θ_0 is θ*)
    assert fp.distance_mean[-1] ** 2 < 10 * 80 / 20


def test_deterministic_contraction_converges_and_reports_the_spectral_radius():
    J = np.array([[0.8, 0.3], [0.0, 0.5]])
    X = _ar_paths(J, c=np.array([1.0, -2.0]), T=200, x0=np.array([0.0, 0.0]))
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "converged", fp.reason
    assert fp.rate == pytest.approx(0.8, abs=1e-6)
    assert fp.evidence["rate_fit"] == "VAR(1)"


def test_theta_that_never_moves_is_converged():
    X = np.ones((3, 10, 2))
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "converged" and "never leaves" in fp.reason


def test_sign_flipping_dynamics_oscillate():
    X = _ar_paths(np.array([[-0.9]]), c=np.array([0.0]), noise=0.1, T=80)
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "oscillating", fp.reason
    assert fp.eigenvalue.real < -0.8


def test_explosive_and_nonfinite_trajectories_diverge():
    X = _ar_paths(np.array([[1.08]]), c=np.array([0.0]), noise=0.01, T=60)
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "diverging", fp.reason
    assert fp.rate > 1.0
    X[:, 30:] = np.inf
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "diverging" and fp.evidence["first_nonfinite_generation"] == 30


def test_noisy_ar_rate_is_unbiased_on_short_panels():
    """The within AR(1) on short panels is biased by −(1+ρ)/T ≈ −0.085 here (Nickell); the
    first-difference moment estimator is not (SE ≈ √((1−ρ²)/(seeds·T)) ≈ 0.004)."""
    X = _ar_paths(np.array([[0.7]]), c=np.array([0.0]), noise=1.0, T=20, seeds=2000, x0=0.0)
    fp = FixedPointAnalyzer(n_bootstrap=50).analyze(X)
    assert abs(fp.rate - 0.7) < 4 * fp.rate_se + 0.005
    assert fp.rate_ci[0] < 0.7 < fp.rate_ci[1]


def _performative(eps=0.9, mu=10.0, step_sd=0.01, seeds=50, T=100, seed=0):
    """Performative prediction: the model's mean is refitted to D(θ) = N(μ + εθ, σ²) with
    n samples, θ_{t+1} = μ + εθ_t + (σ/√n)·z, from θ_0 = μ; the performatively stable point
    is θ_PS = μ/(1 − ε) = 100 and the stationary sd (σ/√n)/√(1 − ε²) = 0.02294."""
    rng = np.random.default_rng(seed)
    X = np.empty((seeds, T + 1, 1))
    X[:, 0] = mu
    for t in range(T):
        X[:, t + 1] = mu + eps * X[:, t] + step_sd * rng.standard_normal((seeds, 1))
    return X


def test_performative_loop_converges_to_its_own_fixed_point():
    fp = FixedPointAnalyzer().analyze(_performative())
    assert fp.verdict == "converged", fp.reason
    assert fp.limit[0] == pytest.approx(100.0, abs=0.01)
    # a 90 % interval misses one time in ten: check the miss against its width instead
    lo, hi = fp.limit_ci[0][0], fp.limit_ci[1][0]
    assert lo < fp.limit[0] < hi and abs(fp.limit[0] - 100.0) < 2 * (hi - lo)
    assert fp.burn_in >= 40  # 90·0.9^t reaches the noise (≈ 0.003 over seeds) near t ≈ 80
    assert fp.limit_distance_to_theta_star == pytest.approx(90.0, abs=0.01)
    # 50 seeds × ≈ 70 stationary generations (≈ 6 effective per seed): relative SE ≈ 4 %
    assert fp.level == pytest.approx(0.02294, rel=0.15)
    assert fp.rate_ci[0] < 0.9 < fp.rate_ci[1]
    assert fp.initial_distance == pytest.approx(90.0, abs=0.01)


def test_one_seed_three_generations_is_inconclusive():
    X = _performative(seeds=1, T=3)
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "inconclusive" and "too little evidence" in fp.reason
    two = FixedPointAnalyzer().analyze(_ar_paths(np.array([[0.5]]), c=np.array([0.0]),
                                                 noise=0.1, T=2, seeds=2))
    assert two.verdict == "inconclusive"


def test_converging_to_zero_is_not_collapse_unless_a_diversity_metric_collapses():
    X = _ar_paths(np.array([[0.8]]), c=np.array([0.0]), noise=1e-4, T=40, seeds=30)
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "converged", fp.reason
    assert fp.limit[0] == pytest.approx(0.0, abs=1e-3)
    # the same θ with a declared diversity metric that decays geometrically to 0
    div = np.exp(-0.2 * np.arange(41))[None, :] * np.exp(
        0.01 * np.random.default_rng(1).standard_normal((30, 41)))
    fp = FixedPointAnalyzer().analyze(X, diversity={"spread": div})
    assert fp.verdict == "collapsing" and "spread" in fp.reason
    assert fp.collapsing_metrics["spread"]["log_slope"] == pytest.approx(-0.2, abs=0.01)
    # a diversity metric that falls to a positive floor is not collapse
    floor = 1 + np.exp(-0.3 * np.arange(41))[None, :] + 0.0 * div
    assert FixedPointAnalyzer().analyze(X, diversity={"s": floor}).verdict == "converged"


def test_accumulating_loops_report_no_ar_rate():
    cfg = stabfw.RetrainConfig(lam=1.0, policy="accumulate", generations=30, seeds=50)
    traj = stabfw.run_loop(GaussianLoop(dim=1, n=20, covariance="known"), cfg)
    fp = FixedPointAnalyzer().analyze(traj)
    assert math.isnan(fp.rate) and "accumulates" in fp.evidence["rate_note"]
    assert fp.verdict in ("converged", "stationary_noise"), fp.reason


def test_runner_records_metric_info_and_collapse_reads_it():
    cfg = stabfw.RetrainConfig(policy="fully_synthetic", generations=60, seeds=40)
    traj = stabfw.run_loop(GaussianLoop(dim=2, n=20), cfg)
    assert traj.meta["metric_info"]["cov_trace"]["kind"] == "diversity"
    fp = FixedPointAnalyzer().analyze(traj)
    assert fp.verdict == "collapsing"
    assert fp.collapsing_metrics["cov_trace"]["collapsing"]
    # without the declaration θ alone is not called collapsing
    assert FixedPointAnalyzer().analyze(traj.params).verdict != "collapsing"


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="generations"):
        FixedPointAnalyzer().analyze(np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="confidence"):
        FixedPointAnalyzer(confidence=1.5)


def test_rate_ci_falls_back_to_standard_error_with_few_seeds():
    X = _ar_paths(np.array([[0.5]]), c=np.array([0.0]), noise=1.0, T=400, seeds=2, x0=0.0)
    fp = FixedPointAnalyzer().analyze(X)
    assert fp.verdict == "stationary_noise"
    assert fp.rate_ci[0] < fp.rate < fp.rate_ci[1]
    assert math.isfinite(fp.rate_ci[1]) and fp.rate_ci[1] - fp.rate_ci[0] < 0.3


# --- the analysis: section, analyze_run and `stabfw analyze` ---------------------------------
def test_run_with_analysis_section_and_analyze_subcommand(tmp_path, capsys):
    import json

    from stabfw.cli import main

    out = tmp_path / "run"
    rc = main(["run", "configs/gaussian_jacobian.yaml", "--out", str(out),
               "--set", "loop.generations=12", "--set", "loop.seeds=30",
               "--set", "output.progress=false",
               "--set", "analysis.lambda_curve.lams=[0.25,1,4]",
               "--set", "analysis.critical_lambda.max_lam=8"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    a = summary["analysis"]
    assert a["fixed_point"]["verdict"] in ("stationary_noise", "converged")
    assert a["jacobian"]["finite_difference"]["spectral_radius"] == pytest.approx(200 / 400)
    assert a["jacobian"]["empirical"]["spectral_radius"] == pytest.approx(0.5, abs=1e-6)
    assert a["solve"]["status"] == "converged"
    assert a["lambda_curve"]["spectral_radius"] == pytest.approx([0.2, 0.5, 0.8], abs=1e-6)
    assert a["lambda_curve"]["theorem1"]["consistent"]
    assert a["critical_lambda"]["status"] == "no_crossing"
    assert a["critical_lambda"]["lam_star"] is None
    assert "no crossing in the swept range [0, 8]" in a["critical_lambda"]["text"]
    assert (out / "analysis.png").stat().st_size > 10_000

    rc = main(["analyze", str(out), "--set", "analysis.jacobian.methods=[empirical]",
               "--set", "analysis.lambda_curve=null", "--set", "analysis.critical_lambda=null",
               "--set", "analysis.solve=false", "--no-report"])
    assert rc == 0
    a = json.loads((out / "summary.json").read_text())["analysis"]
    assert list(a["jacobian"]) == ["empirical"] and "solve" not in a
    assert "ρ(J) by empirical: 0.5" in capsys.readouterr().out

    rc = main(["analyze", str(out), "--set", "analysis.jacobian.method=dense"])
    assert rc == 2
    assert "analysis.jacobian.method" in capsys.readouterr().err


def test_analysis_config_is_strict():
    from stabfw.run.analysis_config import AnalysisConfig

    cfg = AnalysisConfig.model_validate({"jacobian": True, "fixed_point": False})
    assert cfg.fixed_point is None and cfg.jacobian.methods == ["auto"]
    with pytest.raises(Exception, match="unknown option"):
        AnalysisConfig.model_validate({"jacobian": {"options": {"fd_stepp": 1e-3}}})
    with pytest.raises(Exception, match="methods"):
        AnalysisConfig.model_validate({"jacobian": {"methods": ["adjoint"]}})
    with pytest.raises(stabfw.ConfigError, match=r"analysis\.bogus"):
        stabfw.run.config.parse_config({"domain": {"name": "gaussian"}, "analysis": {"bogus": 1}})
