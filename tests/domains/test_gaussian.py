"""The Gaussian reference domain against the closed forms of REFERENCE_CASES.md (C5–C7).

Tolerances are a number of standard errors of the estimate, computed from the closed-form
variance of what is averaged and the number of seeds, so a wrong law fails.
"""

import math

import numpy as np
import pytest
from scipy import special

import stabfw
from stabfw.core import streams
from stabfw.domains.gaussian import GaussianLoop, GaussianState
from stabfw.errors import ConfigError

Z = 5.0  # standard errors allowed


def _run(loop, **loop_kw):
    return stabfw.run_loop(loop, stabfw.RetrainConfig(**loop_kw))


def test_check_loop_passes_for_every_covariance_model():
    for cov in ("full", "diag", "known"):
        stabfw.check_loop(GaussianLoop(dim=3, n=12, covariance=cov))


def test_c5_fully_synthetic_variance_collapse():
    n, t, S = 10, 20, 20_000
    traj = _run(GaussianLoop(dim=1, n=n), policy="fully_synthetic", generations=t, seeds=S)
    assert traj.meta["path"] == "vectorized"
    var = traj.params[:, :, 1]  # θ = (mean, variance)
    k = n - 1
    # conditional on θ*: σ_t² / σ_0² is a product of t independent χ²_{n-1}/n factors
    ratio = var[:, -1] / var[:, 0]
    mean_ratio = ((n - 1) / n) ** t
    var_ratio = (k * (k + 2) / n**2) ** t - mean_ratio**2
    assert abs(ratio.mean() - mean_ratio) < Z * math.sqrt(var_ratio / S)
    step_mean = special.digamma(k / 2) + math.log(2 / n)
    step_var = special.polygamma(1, k / 2)
    log_ratio = np.log(ratio)
    assert abs(log_ratio.mean() - t * step_mean) < Z * math.sqrt(t * step_var / S)
    # the table's numbers, from σ_0 = 1: generation 0 is itself one fit, so t fits end at
    # generation t − 1: E σ² ≈ 0.1216, E log σ² ≈ −4.411
    v = var[:, t - 1]
    assert mean_ratio == pytest.approx(0.1216, abs=1e-4)
    assert t * step_mean == pytest.approx(-4.411, abs=1e-3)
    assert abs(v.mean() - mean_ratio) < Z * math.sqrt(var_ratio / S)
    assert abs(np.log(v).mean() - t * step_mean) < Z * math.sqrt(t * step_var / S)
    # collapse: the variance keeps falling
    assert np.median(var[:, -1]) < np.median(var[:, 0]) * 0.2


def test_c6_lambda_mixing_transient_and_stationary_variance():
    n, lam, sigma, S = 50, 1.0, 1.0, 20_000
    loop = GaussianLoop(dim=1, n=n, covariance="known")
    traj = _run(loop, lam=lam, policy="fixed_real", generations=40, seeds=S)
    err = traj.params[:, :, 0] - traj.params[:, :1, 0]  # θ_t − x̄ (θ* = x̄)
    v_inf = lam * sigma**2 / (n * (1 + 2 * lam))
    assert v_inf == pytest.approx(0.006667, abs=1e-6)
    a = lam / (1 + lam)
    for t in (1, 3, 40):
        v_t = v_inf * (1 - a ** (2 * t))
        est = np.mean(err[:, t] ** 2)
        assert abs(est - v_t) < Z * v_t * math.sqrt(2 / S), (t, est, v_t)
    # transient from a perturbed start: E θ_t − x̄ = (λ/(1+λ))^t (θ_0 − x̄)
    seeds = np.arange(S)
    cfg = stabfw.RetrainConfig(lam=lam, policy="fixed_real", generations=5, seeds=S)
    batch = loop.init_batch(seeds, cfg)
    xbar = batch["mean"][:, 0].copy()
    batch["mean"] = batch["mean"] + 1.0
    for t in range(1, 6):
        batch = loop.step_batch(batch, seeds, t, cfg)
        dev = batch["mean"][:, 0] - xbar
        v_t = v_inf * (1 - a ** (2 * t))
        assert abs(dev.mean() - a**t) < Z * math.sqrt(v_t / S)


def test_c7_replace_grows_linearly_accumulate_stays_bounded():
    n, t, S = 20, 50, 20_000
    loop = GaussianLoop(dim=1, n=n, covariance="known")
    rep = _run(loop, policy="fully_synthetic", generations=t, seeds=S)
    acc = _run(loop, lam=1.0, policy="accumulate", generations=t, seeds=S)
    e_rep = rep.metric("mean_sq_err_true")
    e_acc = acc.metric("mean_sq_err_true")
    for g in (0, 10, t):
        want_rep = (g + 1) / n
        want_acc = sum(1 / i**2 for i in range(1, g + 2)) / n
        # a squared normal has variance 2·mean²
        assert abs(e_rep[:, g].mean() - want_rep) < Z * want_rep * math.sqrt(2 / S)
        assert abs(e_acc[:, g].mean() - want_acc) < Z * want_acc * math.sqrt(2 / S)
    assert (t + 1) / n == pytest.approx(2.55)
    assert sum(1 / i**2 for i in range(1, t + 2)) / n == pytest.approx(0.0813, abs=1e-4)
    assert e_acc[:, t].mean() < (math.pi**2 / 6) / n


@pytest.mark.parametrize("covariance", ["full", "diag", "known"])
@pytest.mark.parametrize(("policy", "lam"), [("fixed_real", 0.5), ("fixed_real", 0.2),
                                             ("fresh_real", 1.0), ("fully_synthetic", None),
                                             ("accumulate", 0.5), ("fixed_real", 0.0)])
def test_vectorised_and_per_seed_paths_agree(covariance, policy, lam):
    # n = 10, d = 3: λ = 0.2 gives m = 2 ≤ d synthetic points (the direct-sampling branch)
    loop = GaussianLoop(dim=3, n=10, covariance=covariance, true_mean=[1.0, -2.0, 0.5],
                        true_cov=[[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
    kw = {"policy": policy, "generations": 6, "seeds": [0, 5, 11]}
    if lam is not None:
        kw["lam"] = lam
    per_seed = _run(loop, vectorize="never", **kw)
    vec = _run(loop, vectorize="always", **kw)
    assert per_seed.meta["path"] == "per_seed" and vec.meta["path"] == "vectorized"
    np.testing.assert_allclose(vec.params, per_seed.params, rtol=1e-9, atol=1e-12)
    cols = [c for c in per_seed.metrics.columns]
    np.testing.assert_allclose(vec.metrics[cols].to_numpy(float),
                               per_seed.metrics[cols].to_numpy(float), rtol=1e-8, atol=1e-10)


@pytest.mark.skipif(not streams.COMPILED, reason="stabfw.core._counter not built")
@pytest.mark.parametrize("policy", ["fully_synthetic", "accumulate", "fresh_real"])
def test_a_build_without_the_compiled_draws_gives_the_same_numbers(policy, monkeypatch):
    # d = 4 and n = 5 reach the Bartlett draws (m = n), their chi-square of shape < 1
    # (χ²_{n−1−i} at i = 3 has one degree of freedom) and the direct draws (m ≤ d at λ = 0.5)
    loop = GaussianLoop(dim=4, n=5)
    kw = {"policy": policy, "generations": 5, "seeds": 40, "vectorize": "always"}
    if policy != "fully_synthetic":
        kw["lam"] = 0.5
    fast = _run(loop, **kw)
    monkeypatch.setattr(streams, "_counter", None)
    slow = _run(loop, **kw)
    np.testing.assert_array_equal(fast.params, slow.params)
    np.testing.assert_array_equal(fast.metrics.to_numpy(float), slow.metrics.to_numpy(float))


def test_samples_are_exactly_gaussian_with_the_fitted_parameters():
    from scipy import stats

    loop = GaussianLoop(dim=2, n=5)
    state = GaussianState(np.array([1.0, -1.0]), np.array([[1.0, 0.8], [0.8, 2.0]]))
    X = np.concatenate([loop.generate(state, 20, stabfw.core.streams.stream(s, 1, "generate"))
                        for s in range(600)])
    np.testing.assert_allclose(X.mean(0), state.mean, atol=Z * np.sqrt(2.0 / len(X)))
    np.testing.assert_allclose(np.cov(X.T), state.cov, atol=0.15)
    # whiten and test each coordinate for normality (the construction must not distort it)
    W = (X - state.mean) @ np.linalg.inv(np.linalg.cholesky(state.cov)).T
    for j in range(2):
        assert stats.kstest(W[:, j], "norm").pvalue > 1e-3


def test_theta_layout_and_with_params_roundtrip():
    loop = GaussianLoop(dim=3)
    X = np.random.default_rng(0).normal(size=(40, 3))
    state = loop.fit(X, None, None)
    theta = loop.params(state)
    assert theta.shape == (3 + 6,)
    np.testing.assert_allclose(theta[:3], X.mean(0))
    np.testing.assert_allclose(state.cov, np.cov(X.T, ddof=0))
    back = loop.with_params(state, theta)
    np.testing.assert_allclose(back.cov, state.cov)
    assert GaussianLoop(dim=3, covariance="diag").params(state).shape == (6,)
    assert GaussianLoop(dim=3, covariance="known").params(state).shape == (3,)
    unbiased = GaussianLoop(dim=3, ddof=1).fit(X, None, None)
    np.testing.assert_allclose(unbiased.cov, np.cov(X.T, ddof=1))


def test_user_data_and_its_errors(tmp_path):
    X = np.random.default_rng(1).normal(size=(25, 2))
    path = tmp_path / "x.npy"
    np.save(path, X)
    traj = _run(GaussianLoop(data=str(path)), lam=1.0, generations=3, seeds=4)
    np.testing.assert_allclose(traj.theta_star[:, :2], np.tile(X.mean(0), (4, 1)))
    with pytest.raises(ConfigError, match=r"domain\.data.*no such file"):
        GaussianLoop(data=str(tmp_path / "missing.npy")).real_data(np.random.default_rng())
    with pytest.raises(ValueError, match="true_cov"):
        GaussianLoop(dim=2, true_cov=[[1, 2], [2, 1]]).real_data(np.random.default_rng())


def test_metrics_match_their_definitions():
    loop = GaussianLoop(dim=2, true_mean=[1.0, 1.0])
    state = GaussianState(np.array([2.0, 0.0]), np.diag([2.0, 3.0]))
    m = loop.metrics(state, None)
    assert m["mean_sq_err_true"] == pytest.approx(2.0)
    assert m["cov_trace"] == pytest.approx(5.0)
    assert m["cov_logdet"] == pytest.approx(math.log(6.0))


def test_factor_is_chosen_matrix_by_matrix():
    from stabfw.domains.gaussian import _factor

    pd_ = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.1], [0.0, 0.1, 0.7]])
    singular = np.diag([1.0, 0.0, 2.0])
    batch = np.stack([pd_, singular, 3 * pd_])
    L, chol = _factor(batch)
    assert chol.tolist() == [True, False, True]
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), batch, atol=1e-12)
    # the same factor as each matrix alone (what the per-seed path computes)
    for i in range(3):
        np.testing.assert_array_equal(L[i], _factor(batch[i])[0])
    np.testing.assert_array_equal(L[0], np.linalg.cholesky(pd_))


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_vectorised_equals_per_seed_when_the_covariance_collapses(covariance):
    # 2 synthetic points in d = 3: every refitted covariance is singular, so the factor is
    # the PSD square root (not Cholesky) on both paths
    loop = GaussianLoop(dim=3, n=10, covariance=covariance)
    kw = {"policy": "fully_synthetic", "synthetic_size": 2, "generations": 3, "seeds": [1, 4]}
    per_seed = _run(loop, vectorize="never", **kw)
    vec = _run(loop, vectorize="always", **kw)
    np.testing.assert_allclose(vec.params, per_seed.params, rtol=1e-9, atol=1e-12)
    assert np.all(np.isneginf(vec.metric("cov_logdet")[:, 1:])) or covariance == "diag"


def test_fully_synthetic_log_det_stays_exact_past_float_conditioning():
    # d = 6, n = 8: after ~20 generations the fitted covariance's condition number passes
    # 1/ε, where factoring it would fail; the drift must still follow the closed form
    # E Δ log det = t Σ_i [ψ((n − i)/2) + log(2/n)], Var = t Σ_i ψ'((n − i)/2)
    d, n, t, S = 6, 8, 40, 4000
    traj = _run(GaussianLoop(dim=d, n=n, ddof=0), policy="fully_synthetic",
                generations=t + 1, seeds=S)
    logdet = traj.metric("cov_logdet")
    k = n - np.arange(1, d + 1)
    step_mean = float(np.sum(special.digamma(k / 2) + math.log(2 / n)))
    step_var = float(np.sum(special.polygamma(1, k / 2)))
    cov = traj.params[:, -1, d:]  # past 1/ε for most seeds: no float Cholesky of Σ exists
    iu = np.triu_indices(d)
    last = np.zeros((S, d, d))
    last[:, iu[0], iu[1]] = cov
    assert np.mean(np.linalg.cond(last + np.triu(last, 1).swapaxes(-1, -2)) > 1e16) > 0.5
    drift = logdet[:, t] - logdet[:, 0]
    assert np.all(np.isfinite(drift))
    assert abs(drift.mean() - t * step_mean) < Z * math.sqrt(t * step_var / S)
