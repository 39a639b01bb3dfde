"""The RL-policy domain: experts, policy, rollouts (three paths), curation, the loop, configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")
torch = pytest.importorskip("torch")

import stabfw  # noqa: E402
from stabfw.core.hooks import resolve_hook  # noqa: E402
from stabfw.core.streams import stream  # noqa: E402
from stabfw.domains.rl import (  # noqa: E402
    BehaviorCloningLoop,
    PolicySpec,
    PolicyState,
    Transitions,
    make_runner,
    make_task,
    rollout,
)
from stabfw.domains.rl.rollouts import sample_actions  # noqa: E402
from stabfw.domains.rl.torch_policy import policy_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = BehaviorCloningLoop.test_params


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cartpole_bc():
    """A CartPole policy cloned at λ = 0 from 2000 expert pairs (shared by several tests)."""
    loop = BehaviorCloningLoop(n_expert=2000, hidden=[32, 32], epochs=20, eval_episodes=20)
    real = loop.real_data(stream(0, -1, "real"))
    return loop, real, loop.fit(real, None, stream(0, 0, "fit"))


# --- experts ------------------------------------------------------------------------------
def test_cartpole_expert_balances_every_episode():
    task = make_task("CartPole-v1")
    runner = make_runner("CartPole-v1", "native", 8, 500)
    ro = rollout(runner, task.expert.distribution, True, np.uint64(11), 500, n_episodes=24)
    # the stochastic LQR expert (temperature 1) holds the pole for the whole horizon
    assert ro.returns.min() == 500
    assert task.success(ro.final_obs, ro.lengths, ro.terminated, 500).all()
    # and it is genuinely stochastic: about 0.49 nats of action entropy on its own states
    p = task.expert.distribution(np.concatenate(ro.obs))
    entropy = -(p * np.log(p)).sum(axis=1).mean()
    assert 0.3 < entropy < 0.65


def test_pendulum_expert_swings_up_and_holds():
    task = make_task("Pendulum-v1")
    runner = make_runner("Pendulum-v1", "sync", 8, 200)
    ro = rollout(runner, task.expert.distribution, False, np.uint64(3), 200, n_episodes=16)
    # measured mean ≈ −150 (range −1 … −380 by start state); a random policy scores ≈ −1200
    assert ro.returns.mean() > -220
    assert task.success(ro.final_obs, ro.lengths, ro.terminated, 200).mean() >= 0.9


def test_expert_gain_is_the_lqr_solution():
    from scipy import linalg

    expert = make_task("Pendulum-v1").expert
    a, b, dt = 15.0, 3.0, 0.05
    A = np.array([[1 + a * dt * dt, dt], [a * dt, 1.0]])
    B = np.array([[b * dt * dt], [b * dt]])
    Q, R = np.diag([1.0, 0.1]), np.array([[0.001]])
    P = linalg.solve_discrete_are(A, B, Q, R)
    K = expert.gain[None]
    # the Riccati fixed point: P = Q + Aᵀ P A − Aᵀ P B K
    np.testing.assert_allclose(Q + A.T @ P @ A - A.T @ P @ B @ K, P, rtol=1e-8)
    # the closed loop is stable
    assert np.abs(np.linalg.eigvals(A - B @ K)).max() < 1


def test_custom_expert_by_import_path(monkeypatch):
    import sys
    import types

    from stabfw.domains.rl import CartPoleLQRExpert

    mod = types.ModuleType("my_experts")
    mod.factory = lambda env, noise: CartPoleLQRExpert(temperature=noise)
    monkeypatch.setitem(sys.modules, "my_experts", mod)
    task = make_task("CartPole-v1", expert="my_experts:factory", noise=2.0)
    assert task.expert.temperature == 2.0 and task.success_name == "balanced"
    with pytest.raises(ValueError, match="cannot be imported"):
        make_task("CartPole-v1", expert="my_experts:nothing")


def test_unknown_env_needs_an_expert():
    with pytest.raises(ValueError, match="no built-in expert"):
        make_task("Acrobot-v1")
    with pytest.raises(ValueError, match="module:factory"):
        make_task("Acrobot-v1", expert="nocolon")


# --- policy -------------------------------------------------------------------------------
@pytest.mark.parametrize("discrete", [True, False])
def test_numpy_forward_matches_torch_and_is_batch_invariant(discrete):
    rng = np.random.default_rng(0)
    spec = PolicySpec(3, 2, discrete, (16, 8), rng.normal(size=3), rng.uniform(0.5, 2, 3))
    theta = spec.init(rng) * 50  # large weights so the check is not about tiny numbers
    obs = rng.normal(size=(23, 3)).astype(np.float32)
    module = policy_module(spec, theta)
    ours = spec.forward(theta, obs)
    np.testing.assert_allclose(module(torch.as_tensor(obs)).detach().numpy(), ours,
                               rtol=1e-4, atol=1e-4)
    torch_theta = torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy()
    np.testing.assert_allclose(torch_theta, theta, rtol=1e-6)  # same layout
    rows = np.concatenate([spec.forward(theta, obs[i:i + 1]) for i in range(len(obs))])
    assert np.array_equal(rows, ours)  # bit for bit: rollouts do not depend on batching
    assert np.array_equal(spec.forward(theta, obs[5:12]), ours[5:12])


def test_log_prob_is_the_closed_form():
    rng = np.random.default_rng(1)
    spec = PolicySpec(2, 2, False, (4,), np.zeros(2), np.ones(2))
    theta = spec.init(rng)
    theta[-2:] = [-0.3, 0.4]  # log-std
    obs = rng.normal(size=(5, 2)).astype(np.float32)
    act = rng.normal(size=(5, 2)).astype(np.float32)
    mean, std = spec.distribution(theta, obs)
    expect = (-0.5 * ((act - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(1)
    got = policy_module(spec, theta).log_prob(torch.as_tensor(obs), torch.as_tensor(act))
    np.testing.assert_allclose(got.detach().numpy(), expect, rtol=1e-5)


def test_inverse_cdf_sampling():
    p = np.array([[0.2, 0.8], [0.5, 0.5], [0.1, 0.3]])
    p = p / p.sum(axis=1, keepdims=True)
    u = np.array([[0.19], [0.51], [0.3]])
    assert sample_actions(p, u, True).tolist() == [0, 1, 1]
    a = sample_actions((np.zeros((1, 1)), np.array([2.0])), np.array([[0.975]]), False)
    assert a[0, 0] == pytest.approx(2 * 1.959964, rel=1e-5)


# --- rollouts: the three paths give the same data --------------------------------------------
@pytest.mark.parametrize("env_id, modes", [("CartPole-v1", ["single", "sync", "native"]),
                                           ("Pendulum-v1", ["single", "sync"])])
def test_vector_and_single_env_rollouts_give_the_same_data(env_id, modes):
    loop = BehaviorCloningLoop(env_id=env_id, **{k: v for k, v in TINY.items()
                                                 if k not in ("env_id",)})
    # an untrained policy: CartPole episodes of very different lengths (≈ 10–60 steps),
    # so slots finish out of step and the scheduling is exercised
    state = loop.fit(loop.real_data(stream(1, -1, "real")), None, stream(1, 0, "fit"))
    data = {}
    for mode in modes:
        runner = make_runner(env_id, mode, 3, loop._max_steps)
        ro = loop.policy_rollout(state, stream(5, 1, "generate"), n_pairs=301, runner=runner)
        data[mode] = ro.transitions(301)
        runner.close()
    ref = data["single"]
    assert len(ref) == 301 and ref.n_episodes > 3
    for mode in modes[1:]:
        assert data[mode].equals(ref), f"{mode} rollout differs from single-env"
    # seeds matter: another stream gives other data
    other = loop.generate(state, 301, stream(6, 1, "generate"))
    assert not other.equals(ref)


def test_rollout_counts_and_episode_bookkeeping():
    loop = BehaviorCloningLoop(**TINY)
    state = loop.fit(loop.real_data(stream(0, -1, "real")), None, stream(0, 0, "fit"))
    batch = loop.generate(state, 137, stream(0, 1, "generate"))
    assert len(batch) == 137  # exactly n pairs, whatever the episode lengths
    ids, rets = batch.episode_returns()
    # CartPole pays 1 per step: a fully used episode's return is its number of pairs
    counts = np.bincount(batch.episode)[ids]
    np.testing.assert_array_equal(rets[:-1], counts[:-1])
    assert rets[-1] >= counts[-1]  # the last one may be cut; it keeps its full return
    assert batch.obs.dtype == np.float32 and batch.act.dtype == np.int64
    assert len(loop.generate(state, 0, stream(0, 1, "generate"))) == 0


# --- curation -----------------------------------------------------------------------------
def _batch(returns, lengths):
    ep = np.concatenate([np.full(n, k) for k, n in enumerate(lengths)])
    ret = np.concatenate([np.full(n, r, dtype=float) for r, n in zip(returns, lengths)])
    obs = np.arange(ep.size, dtype=np.float32)[:, None]
    return Transitions(obs, np.zeros(ep.size, dtype=np.int64), ep.astype(np.int64), ret)


def test_top_return_keeps_the_best_episodes_whole():
    batch = _batch([5.0, 9.0, 1.0, 9.0, 7.0], [2, 3, 4, 1, 2])
    hook = resolve_hook({"name": "top_return", "q": 0.4})
    kept = hook(batch, state=None, loop=None, rng=np.random.default_rng(0), real=None)
    # ceil(0.4 · 5) = 2 episodes: the two with return 9 (ids 1 and 3), all their pairs
    assert sorted(set(kept.episode.tolist())) == [1, 3]
    assert len(kept) == 4
    all_kept = resolve_hook({"name": "top_return", "q": 1.0})(
        batch, state=None, loop=None, rng=None, real=None)
    assert all_kept.equals(batch)
    with pytest.raises(ValueError, match="q must be in"):
        resolve_hook({"name": "top_return", "q": 0})


def test_concat_keeps_episode_ids_unique():
    a, b = _batch([1.0, 2.0], [2, 2]), _batch([3.0], [3])
    c = Transitions.concat([a, b])
    assert len(c) == 7 and c.n_episodes == 3
    np.testing.assert_array_equal(c.episode_returns()[1], [1.0, 2.0, 3.0])


# --- the loop -----------------------------------------------------------------------------
def test_check_loop_passes_for_both_representations():
    stabfw.check_loop(BehaviorCloningLoop(**TINY))
    sig = BehaviorCloningLoop(**TINY, representation="signature")
    assert not sig.supports_with_params
    stabfw.check_loop(sig)
    state = sig.fit(sig.real_data(stream(0, -1, "real")), None, stream(0, 0, "fit"))
    theta = sig.params(state)
    assert theta.shape == (TINY["probe_size"] * 2,)
    np.testing.assert_allclose(theta.reshape(-1, 2).sum(axis=1), 1.0)  # probabilities


def test_fit_is_deterministic_and_leaves_init_alone():
    loop = BehaviorCloningLoop(**TINY)
    real = loop.real_data(stream(0, -1, "real"))
    assert real.equals(loop.real_data(stream(0, -1, "real")))
    a = loop.fit(real, None, stream(0, 0, "fit"))
    b = loop.fit(real, None, stream(0, 0, "fit"))
    assert np.array_equal(a.theta, b.theta)
    c = loop.fit(real, None, stream(1, 0, "fit"))  # another torch/numpy seed
    assert not np.array_equal(a.theta, c.theta)
    before = a.theta.copy()
    warm = loop.fit(real, a, stream(0, 1, "fit"))
    assert np.array_equal(a.theta, before) and not np.array_equal(warm.theta, before)
    swapped = loop.with_params(a, a.theta + 1.0)
    assert isinstance(swapped, PolicyState)
    np.testing.assert_array_equal(loop.params(swapped), a.theta + 1.0)


def test_kl_and_entropy_are_the_closed_forms():
    from scipy import stats

    loop = BehaviorCloningLoop(**TINY)
    state = loop.fit(loop.real_data(stream(0, -1, "real")), None, stream(0, 0, "fit"))
    kl, ent = loop.probe_divergence(state)
    pe = loop.task.expert.distribution(loop.probe_states)
    pp = loop.spec.distribution(state.theta, loop.probe_states)
    assert kl == pytest.approx(np.mean([stats.entropy(e, p) for e, p in zip(pe, pp)]), rel=1e-9)
    assert ent == pytest.approx(np.mean([stats.entropy(p) for p in pp]), rel=1e-9)

    pend = BehaviorCloningLoop(**{**TINY, "env_id": "Pendulum-v1"})
    theta = pend.spec.init(np.random.default_rng(0))
    theta[-1] = math.log(0.7)
    kl, ent = pend.probe_divergence(PolicyState(theta))
    mu_e, sd_e = pend.task.expert.distribution(pend.probe_states)
    mu_p, sd_p = pend.spec.distribution(theta, pend.probe_states)
    x = np.linspace(-8, 8, 20001)  # KL by quadrature on one probe state
    pe = stats.norm.pdf(x, mu_e[0, 0], sd_e[0])
    pp = stats.norm.pdf(x, mu_p[0, 0], sd_p[0])
    one = np.trapezoid(pe * (np.log(pe + 1e-300) - np.log(pp + 1e-300)), x)
    kl_first = (np.log(sd_p / sd_e) + (sd_e**2 + (mu_e[0] - mu_p[0]) ** 2) / (2 * sd_p**2)
                - 0.5)
    assert one == pytest.approx(float(kl_first[0]), rel=1e-4)
    assert ent == pytest.approx(float(stats.norm(0, 0.7).entropy()), rel=1e-9)


def test_behaviour_cloning_at_lambda_0_is_near_expert(cartpole_bc):
    # The expert scores 500 on every episode. A clone within a small KL of it inherits its
    # margin (the expert still balances at twice its temperature), so we ask for ≥ 90 % of
    # the expert's return over 20 evaluation episodes: 10 % leaves room for the few
    # episodes that covariate shift takes off the demonstrated states.
    loop, _, state = cartpole_bc
    m = loop.metrics(state, stream(0, 0, "metrics"))
    assert m["return_mean"] >= 450
    assert m["kl_expert_policy"] < 0.05
    assert set(m) == {"return_mean", "return_ci95", "success_rate", "kl_expert_policy",
                      "action_entropy"}


def test_mixing_counts_and_determinism_under_seed():
    loop = BehaviorCloningLoop(**TINY)
    cfg = stabfw.RetrainConfig(lam=1.5, generations=2, seeds=[3])
    a = stabfw.run_loop(loop, cfg)
    m = a.metrics
    assert (m["n_real"] == TINY["n_expert"]).all()
    assert m.loc[m.generation > 0, "n_synthetic"].tolist() == [300, 300]  # ⌊1.5 · 200⌋
    b = stabfw.run_loop(BehaviorCloningLoop(**TINY), cfg)
    assert np.array_equal(a.params, b.params)
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    # curation shrinks the own share; a fully synthetic loop has no expert pairs
    cur = stabfw.run_loop(loop, cfg.model_copy(update={"curate": {"name": "top_return",
                                                                   "q": 0.5}}))
    assert (cur.metrics.loc[cur.metrics.generation > 0, "n_synthetic"] < 300).all()
    syn = stabfw.run_loop(loop, stabfw.RetrainConfig(lam=math.inf, generations=1, seeds=1))
    assert syn.metrics.loc[1, "n_real"] == 0 and syn.metrics.loc[1, "n_synthetic"] == 200


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="eval_episodes"):
        _ = BehaviorCloningLoop(**{**TINY, "eval_episodes": 1}).spec
    pendulum_native = {**TINY, "env_id": "Pendulum-v1", "vectorization": "native"}
    with pytest.raises(ValueError, match="native"):
        _ = BehaviorCloningLoop(**pendulum_native).spec
    with pytest.raises(stabfw.ConfigError, match="representation"):
        stabfw.make("rl", representation="pixels")


# --- analyzers -------------------------------------------------------------------------------
def test_fixed_point_analyzer_reads_an_rl_trajectory_and_the_map_uses_common_numbers():
    from stabfw.analysis import fixed_point
    loop = BehaviorCloningLoop(**TINY)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=3, seeds=2)
    traj = stabfw.run_loop(loop, cfg)
    fp = fixed_point.FixedPointAnalyzer(n_bootstrap=20).analyze(traj)
    assert fp.verdict in fixed_point.VERDICTS and fp.dim == loop.spec.dim
    np.testing.assert_allclose(fp.distance_mean, traj.distances.mean(axis=0), rtol=1e-9)
    ent = fixed_point.FixedPointAnalyzer(n_bootstrap=20).analyze(traj, metric="action_entropy")
    assert ent.verdict in fixed_point.VERDICTS
    # one generation as a function of θ: the same θ gives the same θ' (fixed env seeds
    # and action noise), and it is the run's own generation 1 from θ*
    G = stabfw.RetrainingMap(loop, cfg, seed=0)
    a, b = G(G.theta_star), G(G.theta_star)
    assert np.array_equal(a, b)
    np.testing.assert_array_equal(a, traj.params[0, 1])


def test_finite_difference_and_empirical_jacobians_agree_on_a_tiny_pendulum_loop():
    from stabfw.analysis import jacobian
    # a 1-unit Gaussian policy (d = 7), cold-started fits: the map depends on θ only
    # through the rollouts, smoothly (continuous actions, common random numbers)
    loop = BehaviorCloningLoop(**{**TINY, "env_id": "Pendulum-v1", "hidden": [1]})
    cfg = stabfw.RetrainConfig(lam=1.0, generations=1, seeds=1, warm_start=False)
    fd = jacobian.JacobianAnalyzer(method="finite_difference").analyze(loop, cfg)
    emp = jacobian.JacobianAnalyzer(method="empirical").analyze(loop, cfg)
    assert fd.n_matvecs >= loop.spec.dim
    # two independent estimates of the same J (central differences along each direction
    # vs least squares on perturbed trajectories) give the same spectral radius
    assert fd.spectral_radius == pytest.approx(emp.spectral_radius, rel=0.2, abs=1e-3)
    assert fd.spectral_radius < 1


# --- configs through the CLI ---------------------------------------------------------------
# plots are the core's business (and its tests'); skipping them keeps these runs short
_TINY_SET = [f"domain.{k}={v}" for k, v in TINY.items() if k != "env_id"] + [
    "loop.generations=1", "loop.seeds=1", "sweep.backend=serial", "output.progress=false",
    "output.report=false"]


def test_cartpole_config_runs_through_the_cli(tmp_path):
    from stabfw.cli import main

    assert main(["validate", str(ROOT / "configs/cartpole_bc.yaml")]) == 0
    out = tmp_path / "cp"
    grid = "sweep.grid={loop.lam: [1, .inf], loop.curate: [null, {name: top_return, q: 0.5}]}"
    assert main(["run", str(ROOT / "configs/cartpole_bc.yaml"), "--out", str(out),
                 "--set", grid, *[a for s in _TINY_SET for a in ("--set", s)]]) == 0
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert len(cells) == 4
    for c in cells:
        traj = stabfw.Trajectory.load(out / "cells" / c)
        assert traj.params.shape[:2] == (1, 2)
    assert (out / "index.json").is_file()


def test_pendulum_config_runs_through_the_cli(tmp_path):
    from stabfw.cli import main

    assert main(["validate", str(ROOT / "configs/pendulum_bc.yaml")]) == 0
    out = tmp_path / "pend"
    grid = "sweep.grid={loop.lam: [4], loop.curate: [{name: top_return, q: 0.5}]}"
    assert main(["run", str(ROOT / "configs/pendulum_bc.yaml"), "--out", str(out),
                 "--set", grid,
                 *[a for s in _TINY_SET for a in ("--set", s)]]) == 0
    traj = stabfw.Trajectory.load(next((out / "cells").iterdir()))
    assert traj.config["domain"]["env_id"] == "Pendulum-v1"
    assert {"return_mean", "success_rate", "kl_expert_policy"} <= set(traj.metric_names)


# --- longer checks (make test-all) ----------------------------------------------------------
@pytest.mark.slow
def test_pendulum_behaviour_cloning_at_lambda_0_is_near_expert():
    # the expert averages −131 … −148 depending on the episodes; this clone measured −133
    loop = BehaviorCloningLoop(env_id="Pendulum-v1", n_expert=4000, hidden=[64, 64],
                               epochs=30, lr=3e-3, eval_episodes=20)
    state = loop.fit(loop.real_data(stream(0, -1, "real")), None, stream(0, 0, "fit"))
    m = loop.metrics(state, stream(0, 0, "metrics"))
    assert m["return_mean"] > -250
    assert m["success_rate"] >= 0.8
