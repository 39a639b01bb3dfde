"""Each mixing policy builds the training set it claims.

A tagging loop marks every point with where it came from: real points carry tag -1,
synthetic points the generation that produced them. Fits record their training sets.
"""

import numpy as np
import pytest

import stabfw
from stabfw.run.policies import build_training_set


class TagLoop(stabfw.SelfConsumingLoop):
    def __init__(self, n: int = 10):
        self.n = n

    def real_data(self, rng):
        return np.column_stack([rng.normal(size=self.n), np.full(self.n, -1.0)])

    def fit(self, data, init, rng):
        gen = 0 if init is None else init["gen"] + 1
        self.seen.setdefault(gen, []).append(data.copy())
        return {"gen": gen, "mean": float(data[:, 0].mean())}

    def generate(self, state, n, rng):
        return np.column_stack([rng.normal(state["mean"], 1.0, n), np.full(n, state["gen"] + 1.0)])

    def params(self, state):
        return np.array([state["mean"]])


def _run(policy, lam, generations=4, **kw):
    loop = TagLoop()
    loop.seen = {}
    cfg = stabfw.RetrainConfig(lam=lam, policy=policy, generations=generations, seeds=1, **kw)
    traj = stabfw.run_loop(loop, cfg)
    return loop.seen, traj


def test_fixed_real_reuses_the_same_real_points():
    seen, traj = _run("fixed_real", 0.5)
    real0 = seen[0][0]
    for t in range(1, 5):
        data = seen[t][0]
        assert data.shape[0] == 10 + 5
        np.testing.assert_array_equal(data[:10], real0)  # same real points, first
        np.testing.assert_array_equal(data[10:, 1], t)  # synthetic from generation t-1's model
    assert list(traj.metrics["n_real"]) == [10] * 5
    assert list(traj.metrics["n_synthetic"]) == [0, 5, 5, 5, 5]


def test_fresh_real_draws_new_real_points_each_generation():
    seen, _ = _run("fresh_real", 1.0)
    reals = [seen[t][0][:10, 0] for t in range(5)]
    for t in range(1, 5):
        assert np.all(seen[t][0][:10, 1] == -1) and seen[t][0].shape[0] == 20
        assert not np.allclose(reals[t], reals[t - 1])


@pytest.mark.parametrize(("policy", "lam", "size"), [("fully_synthetic", None, 10),
                                                     ("fixed_real", float("inf"), 10)])
def test_fully_synthetic_has_no_real_points(policy, lam, size):
    seen, traj = _run(policy, lam)
    for t in range(1, 5):
        assert seen[t][0].shape[0] == size
        np.testing.assert_array_equal(seen[t][0][:, 1], t)
    assert list(traj.metrics["n_real"])[1:] == [0] * 4


def test_fully_synthetic_size_is_configurable():
    seen, _ = _run("fully_synthetic", None, synthetic_size=4)
    assert all(seen[t][0].shape[0] == 4 for t in range(1, 5))


def test_accumulate_keeps_every_past_synthetic_point():
    seen, traj = _run("accumulate", 0.5)
    for t in range(1, 5):
        data = seen[t][0]
        assert data.shape[0] == 10 + 5 * t
        assert np.all(data[:10, 1] == -1)
        # every generation 1..t contributed its 5 points, oldest first
        np.testing.assert_array_equal(data[10:, 1], np.repeat(np.arange(1, t + 1), 5))
        if t > 1:  # earlier synthetic points are kept unchanged
            np.testing.assert_array_equal(data[: 10 + 5 * (t - 1)], seen[t - 1][0])
    assert list(traj.metrics["n_synthetic"]) == [0, 5, 10, 15, 20]


def test_accumulate_subsample_keeps_a_fixed_size_subset_of_the_pool():
    seen, traj = _run("accumulate_subsample", 1.0, generations=5, subsample_size=12)
    for t in range(1, 6):
        data = seen[t][0]
        pool_size = 10 + 10 * t
        assert data.shape[0] == min(12, pool_size)
        tags = data[:, 1]
        assert np.all(np.diff((tags >= 0).astype(int)) >= 0), "real points first"
        assert set(tags) <= {-1.0, *map(float, range(1, t + 1))}
    n_real = traj.metrics["n_real"].to_numpy()
    assert np.all(n_real[1:] <= 10) and np.all(traj.metrics["n_synthetic"][1:] == 12 - n_real[1:])


def test_accumulate_subsample_default_size_is_n_plus_lambda_n():
    seen, _ = _run("accumulate_subsample", 0.5, generations=3)
    assert all(seen[t][0].shape[0] == 15 for t in range(1, 4))


def test_build_training_set_directly():
    loop = TagLoop()
    real = np.zeros((4, 2)) - 1
    syn = np.ones((2, 2))
    cfg = stabfw.RetrainConfig(lam=0.5, policy="accumulate")
    ts, pool = build_training_set(loop, cfg, real, syn, None, np.random.default_rng(0))
    assert (ts.n_real, ts.n_synthetic) == (4, 2) and pool.shape == (2, 2)
    ts2, pool2 = build_training_set(loop, cfg, real, syn * 2, pool, np.random.default_rng(0))
    assert (ts2.n_real, ts2.n_synthetic) == (4, 4) and pool2.shape == (4, 2)


def test_curate_and_correct_hooks_run_in_order():
    calls = []

    def curate(batch, *, state, loop, rng, real):
        calls.append(("curate", batch.shape[0], real is not None))
        return batch[: batch.shape[0] // 2]

    def correct(batch, *, state, loop, rng, real):
        calls.append(("correct", batch.shape[0]))
        out = batch.copy()
        out[:, 0] = 0.5 * out[:, 0] + 0.5 * real[:, 0].mean()
        return out

    seen, traj = _run("fixed_real", 1.0, generations=2, curate=curate, correct=correct)
    assert calls == [("curate", 10, True), ("correct", 5), ("curate", 10, True), ("correct", 5)]
    assert seen[1][0].shape[0] == 15
    assert "test_policies" in traj.config["loop"]["curate"]


def test_top_fraction_hook_uses_the_domain_score():
    class Scored(TagLoop):
        def score(self, batch, state):
            return batch[:, 0]

    from stabfw.core.hooks import resolve_hook

    hook = resolve_hook({"name": "top_fraction", "q": 0.25})
    batch = np.column_stack([np.arange(8.0), np.zeros(8)])
    kept = hook(batch, state=None, loop=Scored(), rng=None, real=None)
    np.testing.assert_array_equal(kept[:, 0], [6.0, 7.0])
    with pytest.raises(ValueError, match="unknown hook"):
        resolve_hook("no_such_hook")
