"""Built-in hooks against closed forms: self-correction's λ_eff = λ/(1+γ+λγ), sampling bias's
tempered variance; hook signatures refused at config time with the expected form."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import stabfw
from stabfw.cli import main
from stabfw.core.hooks import HOOK_SIGNATURE, registered_hooks, resolve_hook
from stabfw.domains.gaussian import GaussianLoop


@pytest.mark.parametrize(("lam", "gamma"), [(1.0, 1.0), (2.0, 0.5), (4.0, 3.0)])
def test_self_correct_contracts_the_mean_at_lam_eff(lam, gamma):
    # known covariance: θ is the mean and G is affine in it (common random numbers), so a
    # difference quotient is the Jacobian exactly: λ_eff/(1+λ_eff) = λ/((1+γ)(1+λ))
    loop = GaussianLoop(dim=1, n=60, covariance="known")
    cfg = stabfw.RetrainConfig(lam=lam, policy="fixed_real", seeds=[3],
                               correct={"name": "self_correct", "gamma": gamma})
    G = stabfw.RetrainingMap(loop, cfg, seed=3, generation=1)
    x0 = np.array([0.2])
    slope = (G(x0 + 1.0) - G(x0))[0]
    lam_eff = lam / (1 + gamma + lam * gamma)
    assert slope == pytest.approx(lam_eff / (1 + lam_eff), rel=1e-9)
    assert slope == pytest.approx(lam / ((1 + gamma) * (1 + lam)), rel=1e-9)
    assert round(60 * lam * gamma / (1 + gamma)) > 0  # the hook replaced points


def test_self_correct_rate_over_a_run_matches_lam_eff():
    loop = GaussianLoop(dim=1, n=50, covariance="known")
    lam, gamma = 2.0, 1.0
    cfg = stabfw.RetrainConfig(lam=lam, policy="fixed_real", generations=40, seeds=60,
                               correct={"name": "self_correct", "gamma": gamma}, vectorize="auto")
    fp = stabfw.FixedPointAnalyzer().analyze(stabfw.run_loop(loop, cfg, progress=False))
    target = lam / ((1 + gamma) * (1 + lam))  # 1/3, against 2/3 uncorrected
    assert fp.rate_ci[0] <= target <= fp.rate_ci[1]


def test_self_correct_with_a_user_corrector_passes_the_chosen_share():
    seen = []

    def to_zero(points, *, state, loop, rng, real):
        seen.append(len(points))
        return np.zeros_like(points)

    hook = resolve_hook({"name": "self_correct", "gamma": 3.0, "corrector": to_zero})
    loop = GaussianLoop(dim=2, n=10)
    batch = np.ones((40, 2))
    out = hook(batch, state=None, loop=loop, rng=np.random.default_rng(0), real=None)
    assert seen == [30] and out.shape == (40, 2) and (out == 0).all(axis=1).sum() == 30


def test_sampling_bias_temperature_shrinks_the_variance_by_tau():
    loop = GaussianLoop(dim=1, n=10)
    state = loop.fit(np.array([[-1.0], [1.0]]), None, np.random.default_rng(0))
    hook = resolve_hook({"name": "sampling_bias", "temperature": 0.5})
    x = loop.generate(state, 20000, np.random.default_rng(1))
    y = hook(x, state=state, loop=loop, rng=np.random.default_rng(2), real=None)
    # importance resampling from p^(1/τ): N(0, τσ²), σ² = 2 here
    assert y.shape == x.shape
    assert np.var(y) == pytest.approx(0.5 * np.var(x), rel=0.05)


def test_sampling_bias_truncation_keeps_the_most_typical_share():
    loop = GaussianLoop(dim=1, n=10)
    state = loop.fit(np.array([[-1.0], [1.0]]), None, np.random.default_rng(0))
    hook = resolve_hook({"name": "sampling_bias", "truncation": 0.5})
    x = np.linspace(-3, 3, 101)[:, None]
    y = hook(x, state=state, loop=loop, rng=np.random.default_rng(0), real=None)
    assert len(y) == 50 and np.abs(y).max() <= 1.5


def test_hook_arguments_refused_with_what_is_accepted():
    assert {"self_correct", "sampling_bias", "top_fraction"} <= set(registered_hooks())
    with pytest.raises(ValueError, match="gamma must be"):
        resolve_hook({"name": "self_correct", "gamma": -1})
    with pytest.raises(ValueError, match="exactly one of temperature"):
        resolve_hook({"name": "sampling_bias"})
    with pytest.raises(ValueError, match="cannot be imported"):
        resolve_hook({"name": "self_correct", "corrector": "no_such_mod:f"})


def test_a_hook_with_the_wrong_signature_is_refused_at_validate(tmp_path, capsys):
    cfg = {"domain": {"name": "gaussian", "dim": 1, "n": 20},
           "loop": {"lam": 1, "generations": 2, "seeds": 2,
                    "correct": {"name": "self_correct", "corrector": "math:hypot"}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 0  # a builtin: its signature cannot be read

    def two_args(batch, state):
        return batch

    expected = r"loop.curate: hook .*two_args.*hook\(batch, \*, state, loop, rng, real\)"
    with pytest.raises(stabfw.ConfigError, match=expected):
        stabfw.run_loop(GaussianLoop(dim=1, n=20),
                        stabfw.RetrainConfig(lam=1, generations=1, seeds=1, curate=two_args),
                        progress=False)
    assert HOOK_SIGNATURE.startswith("hook(batch, *, state")


def test_hooks_say_why_the_vectorised_path_is_not_taken(caplog):
    cfg = stabfw.RetrainConfig(lam=1, generations=1, seeds=2,
                               correct={"name": "self_correct", "gamma": 1})
    with caplog.at_level("WARNING"):
        stabfw.run_loop(GaussianLoop(dim=1, n=20), cfg, progress=False)
    assert any("per-seed path" in r.message and "hooks" in r.message for r in caplog.records)
