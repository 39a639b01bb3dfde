"""critical_lambda: where ρ(J) (or the verdict) crosses 1, against closed forms."""


import numpy as np
import pytest

import stabfw
from stabfw.domains.gaussian import GaussianLoop


class AmplifiedMean(stabfw.SelfConsumingLoop):
    """Gaussian mean (known σ) whose generator over-shoots: samples from N(κμ, σ²).

    With common random numbers G(μ) = (n x̄ + m(κμ + σ z̄))/(n + m), so J = κm/(n + m) ≈
    κλ/(1 + λ): the loop turns unstable at λ* = 1/(κ − 1) (feedback amplifies the drift).
    """

    def __init__(self, n=1000, kappa=1.5):
        self.n, self.kappa = n, kappa

    def real_data(self, rng):
        return 1.0 + rng.standard_normal(self.n)

    def fit(self, data, init, rng):
        return float(np.mean(data))

    def generate(self, state, n, rng):
        return self.kappa * state + rng.standard_normal(n)

    def params(self, state):
        return np.array([state])

    def with_params(self, state, theta):
        return float(theta[0])


def test_spectral_radius_crossing_matches_the_closed_form():
    loop = AmplifiedMean(n=1000, kappa=1.5)
    cfg = stabfw.RetrainConfig(seeds=[0])
    crit = stabfw.critical_lambda(loop, cfg, bracket=(0.0, 1.0), tol=1e-3)
    assert crit.status == "crossing"
    lo, hi = crit.bracket
    # m = ⌊λn⌋ makes ρ a step function of λ: the crossing is within 1/n of λ* = 2
    assert lo - 2e-3 <= 2.0 <= hi + 2e-3
    assert crit.lam_star == pytest.approx(2.0, abs=crit.tolerance + 2e-3)
    assert crit.tolerance <= 5e-3 and crit.ci is None  # one seed: no statistical interval
    assert "one seed: no statistical interval" in crit.text
    assert any(h["lam"] == 2.0 for h in crit.history)  # the bracket was expanded 1 → 2 → 4
    d = crit.to_dict()
    assert d["status"] == "crossing" and d["n_lams"] == len(d["history"])


def test_exponential_family_is_stable_for_every_finite_lambda():
    loop = GaussianLoop(dim=1, n=100, covariance="known")
    crit = stabfw.critical_lambda(loop, stabfw.RetrainConfig(seeds=[0]), max_lam=64)
    assert crit.status == "no_crossing" and crit.lam_star is None
    assert crit.text == "λ*: no crossing in the swept range [0, 64] (stable at every λ evaluated)"
    rhos = [h["rho"] for h in crit.history]
    lams = [h["lam"] for h in crit.history]
    np.testing.assert_allclose(rhos, [lam / (1 + lam) for lam in lams], atol=1e-8)


def test_unstable_at_the_lower_end_and_bad_arguments():
    loop = AmplifiedMean(n=200, kappa=3.0)  # λ* = 0.5
    crit = stabfw.critical_lambda(loop, stabfw.RetrainConfig(seeds=[0]), bracket=(1.0, 4.0))
    assert crit.status == "unstable_throughout" and crit.lam_star is None
    with pytest.raises(ValueError, match="fully_synthetic"):
        stabfw.critical_lambda(loop, stabfw.RetrainConfig(policy="fully_synthetic"))
    with pytest.raises(ValueError, match="bracket"):
        stabfw.critical_lambda(loop, stabfw.RetrainConfig(), bracket=(2.0, 1.0))


def test_replicates_give_an_uncertainty_from_the_seed_spread():
    loop = AmplifiedMean(n=50, kappa=1.5)
    crit = stabfw.critical_lambda(loop, stabfw.RetrainConfig(seeds=3), bracket=(0.0, 4.0),
                                  tol=1e-2, n_replicates=3)
    # every seed's J is exactly κm/(n+m): no spread, so the statistical interval has no
    # width (up to the rounding of central differences, ~1e-11) and the bisection
    # tolerance, reported apart, is all there is
    assert all(h["rho_se"] < 1e-9 and len(h["rhos"]) == 3 for h in crit.history)
    assert crit.tolerance == pytest.approx((crit.bracket[1] - crit.bracket[0]) / 2, rel=1e-6)
    assert crit.ci[1] - crit.ci[0] < 1e-6 and crit.ci[0] <= crit.lam_star <= crit.ci[1]


def test_verdict_criterion_brackets_the_same_threshold():
    loop = AmplifiedMean(n=200, kappa=1.5)
    cfg = stabfw.RetrainConfig(generations=40, seeds=20)
    crit = stabfw.critical_lambda(loop, cfg, criterion="verdict", bracket=(0.5, 4.0), tol=0.1)
    assert crit.status == "crossing"
    # just above λ* = 2 the divergence is slow (ρ − 1 ≈ κ/(1+λ)·(λ − 2)/... ≈ 0): 40
    # generations tell it from noise once ρ ≳ 1.02, i.e. λ ≲ 2.2
    assert 1.5 <= crit.lam_star <= 2.6
    assert {h["verdict"] for h in crit.history} >= {"stationary_noise", "diverging"}
