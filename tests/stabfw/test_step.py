"""One generation step: the retraining map the analyzers study is the map the runs iterate.

For seed s and generation t, ``RetrainingMap(loop, config, seed=s, generation=t)`` applied
to the run's θ_{t−1} returns the run's θ_t exactly — for every mixing policy, with and
without curate/correct hooks, warm and cold start.
"""

import itertools

import numpy as np
import pytest
from reference_loops import BernoulliCoin

import stabfw
from stabfw.core.loop import SelfConsumingLoop
from stabfw.domains.gaussian import GaussianLoop
from stabfw.run.step import GenerationStep, replay


def half_batch(batch, *, state, loop, rng, real):
    """curate: a random half of the batch (uses its own stream)."""
    idx = np.sort(rng.choice(len(batch), size=max(1, len(batch) // 2), replace=False))
    return batch[idx]


def toward_real(batch, *, state, loop, rng, real):
    """correct: move the batch halfway to the real data's mean (nothing without real data)."""
    if real is None:
        return batch
    return batch + 0.5 * (np.mean(real, axis=0) - np.mean(batch, axis=0))


class Coin(BernoulliCoin):
    """The API sketch's coin, fitted with a warm-start-dependent shrinkage (so that warm and
    cold starts give different numbers)."""

    def __init__(self, n=40, p_true=0.3):
        super().__init__(n, p_true)

    def fit(self, data, init, rng):
        p = float(np.mean(data))
        return p if init is None else 0.9 * p + 0.1 * init


POLICIES = ["fixed_real", "fresh_real", "fully_synthetic", "accumulate", "accumulate_subsample"]
HOOKS = [{}, {"curate": half_batch}, {"correct": toward_real},
         {"curate": half_batch, "correct": toward_real}]


def _config(policy, hooks, warm):
    lam = None if policy == "fully_synthetic" else 1.0
    return stabfw.RetrainConfig(lam=lam, policy=policy, generations=4, seeds=[3, 7],
                                warm_start=warm, vectorize="never", **hooks)


@pytest.mark.parametrize(("policy", "hooks", "warm"),
                         list(itertools.product(POLICIES, HOOKS, [True, False])),
                         ids=lambda v: v if isinstance(v, str) else
                         ("+".join(v) or "no-hooks") if isinstance(v, dict) else
                         ("warm" if v else "cold"))
@pytest.mark.parametrize("make", [lambda: GaussianLoop(dim=2, n=24), lambda: Coin()],
                         ids=["gaussian", "coin"])
def test_retraining_map_reproduces_every_generation_of_the_run(make, policy, hooks, warm):
    loop = make()
    cfg = _config(policy, hooks, warm)
    traj = stabfw.run_loop(loop, cfg)
    for i, s in enumerate(cfg.seed_list):
        for t in range(1, cfg.generations + 1):
            G = stabfw.RetrainingMap(loop, cfg, seed=s, generation=t)
            np.testing.assert_array_equal(G(traj.params[i, t - 1]), traj.params[i, t])
        states = replay(loop, cfg, s, cfg.generations)
        np.testing.assert_array_equal(np.stack([loop.theta(r.state) for r in states]),
                                      traj.params[i])


def test_the_api_sketch_invariant_holds_on_the_vectorised_path_too():
    loop = GaussianLoop(dim=3, n=30)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=3, seeds=4)
    traj = stabfw.run_loop(loop, cfg)
    assert traj.meta["path"] == "vectorized"
    for t in (1, 3):
        G = stabfw.RetrainingMap(loop, cfg, seed=2, generation=t)
        np.testing.assert_allclose(G(traj.params[2, t - 1]), traj.params[2, t], rtol=1e-12,
                                   atol=1e-12)


def test_the_map_of_a_later_generation_is_built_on_the_run_state_and_pool():
    loop = GaussianLoop(dim=1, n=20, covariance="known")
    cfg = stabfw.RetrainConfig(lam=1.0, policy="accumulate", generations=3, seeds=[0],
                               vectorize="never")
    G = stabfw.RetrainingMap(loop, cfg, seed=0, generation=3)
    assert len(G.pool) == 2 * 20  # two earlier generations of ⌊λn⌋ = 20 points
    assert not G.autonomous
    with pytest.raises(ValueError, match="pool of past synthetic"):
        stabfw.JacobianAnalyzer(method="finite_difference").analyze(loop, cfg)
    with pytest.raises(ValueError, match="pool of past synthetic"):
        stabfw.FixedPointAnalyzer().solve(loop, cfg)


def test_with_lam_shares_theta_star_but_not_a_later_history():
    loop = GaussianLoop(dim=1, n=20)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=3, seeds=[0], vectorize="never")
    G1 = stabfw.RetrainingMap(loop, cfg, seed=0)
    np.testing.assert_array_equal(G1.with_lam(0.5).theta_star, G1.theta_star)
    G3 = stabfw.RetrainingMap(loop, cfg, seed=0, generation=3).with_lam(0.5)
    half = stabfw.run_loop(loop, cfg.model_copy(update={"lam": 0.5}))
    np.testing.assert_array_equal(G3(half.params[0, 2]), half.params[0, 3])


def test_one_step_is_the_runners_step():
    """Runner, replay and the map all construct their generation with GenerationStep."""
    loop = Coin()
    cfg = _config("fixed_real", {}, True)
    step = GenerationStep(loop, cfg)
    real = step.real_data(3, 0)
    state0 = step.initial(3, real)
    res = step(3, 1, state0, real, None, len(real))
    traj = stabfw.run_loop(loop, cfg)
    assert traj.params[0, 1, 0] == res.state
    assert (res.n_real, res.n_synthetic) == (40, 40)


def test_a_loop_without_with_theta_has_no_retraining_map():
    class NoTheta(Coin):
        with_params = SelfConsumingLoop.with_params

    loop = NoTheta()
    assert not loop.capabilities().with_theta
    with pytest.raises(TypeError, match="with_theta"):
        stabfw.RetrainingMap(loop, stabfw.RetrainConfig())
