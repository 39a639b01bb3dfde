"""run_loop, check_loop, determinism and resume, on a custom domain defined here."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import reference_loops

import stabfw
from stabfw.run.runner import CHECKPOINT


class BernoulliCoin(reference_loops.BernoulliCoin):
    """A coin's bias fitted by maximum likelihood, retrained on its own flips (API_SKETCH),
    whose fit can simulate a crash."""

    def fit(self, data, init, rng):
        if CRASH_AT["generation"] is not None and init is not None:
            CRASH_AT["count"] += 1
            if CRASH_AT["count"] >= CRASH_AT["generation"]:
                raise KeyboardInterrupt("simulated crash")
        return super().fit(data, init, rng)

    def metrics(self, state, rng):
        return {"p": state, "entropy": _entropy(state)}


def _entropy(p):
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)))


CRASH_AT = {"generation": None, "count": 0}


def test_custom_domain_passes_check_loop_and_runs():
    stabfw.check_loop(BernoulliCoin())
    cfg = stabfw.RetrainConfig(lam=1.0, policy="fixed_real", generations=50, seeds=200)
    traj = stabfw.run_loop(BernoulliCoin(), cfg)
    assert traj.params.shape == (200, 51, 1)
    assert set(traj.metrics.columns) >= {"seed", "generation", "p", "entropy",
                                         "dist_to_theta_star", "n_real", "n_synthetic"}
    assert len(traj.metrics) == 200 * 51
    np.testing.assert_allclose(traj.metric("p"), traj.params[..., 0])
    # θ* is the real-data MLE: its mean over seeds is p_true within 5 standard errors
    se = np.sqrt(0.3 * 0.7 / 100 / 200)
    assert abs(traj.theta_star.mean() - 0.3) < 5 * se
    np.testing.assert_allclose(traj.distances, np.abs(traj.params[..., 0] - traj.params[:, :1, 0]))


def test_fully_synthetic_coin_absorbs():
    # A fully synthetic Bernoulli chain is a martingale absorbed at 0 or 1.
    # mean absorption time is about 2n·H(θ*) ≈ 25 generations here; 120 is ample
    cfg = stabfw.RetrainConfig(policy="fully_synthetic", generations=120, seeds=100)
    traj = stabfw.run_loop(BernoulliCoin(n=20), cfg)
    final = traj.params[:, -1, 0]
    assert np.mean((final == 0) | (final == 1)) > 0.9
    # martingale: P(absorbed at 1) = θ*; compare with the seeds' θ* (5 standard errors)
    assert abs(np.mean(final == 1) - traj.theta_star.mean()) < 5 * np.sqrt(0.25 / 100)


def test_same_seed_same_numbers_and_different_seeds_differ(tmp_path):
    cfg = stabfw.RetrainConfig(lam=0.5, generations=10, seeds=[3, 4, 5])
    a = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path / "a")
    b = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    np.testing.assert_array_equal(a.params, b.params)
    c = stabfw.run_loop(BernoulliCoin(), cfg.model_copy(update={"seeds": [3, 4, 6]}))
    np.testing.assert_array_equal(a.params[:2], c.params[:2])  # a seed is its own stream
    assert not np.array_equal(a.params[2], c.params[2])


def test_crash_then_resume_equals_uninterrupted(tmp_path):
    cfg = stabfw.RetrainConfig(lam=1.0, policy="accumulate", generations=12, seeds=4)
    full = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path / "full")
    out = tmp_path / "crashed"
    CRASH_AT.update(generation=4 * 7 + 2, count=0)  # dies inside generation 8
    try:
        with pytest.raises(KeyboardInterrupt):
            stabfw.run_loop(BernoulliCoin(), cfg, out_dir=out)
    finally:
        CRASH_AT.update(generation=None, count=0)
    assert (out / CHECKPOINT / "state.pkl").is_file() and not (out / "metrics.csv").exists()
    resumed = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=out, resume=True)
    assert resumed.meta["resumed_from_generation"] == 7
    assert (out / "metrics.csv").read_bytes() == (tmp_path / "full" / "metrics.csv").read_bytes()
    np.testing.assert_array_equal(resumed.params, full.params)
    assert not (out / CHECKPOINT).exists()


def _crashed(cfg, out, fits):
    CRASH_AT.update(generation=fits, count=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            stabfw.run_loop(BernoulliCoin(), cfg, out_dir=out)
    finally:
        CRASH_AT.update(generation=None, count=0)


def test_a_run_stopped_inside_generation_0s_writes_resumes_from_generation_0(tmp_path):
    """A kill between generation 0's block and its state (a Ctrl-C reaching a sweep's
    workers) leaves the fingerprint and one block: no generation recorded, nothing refused."""
    cfg = stabfw.RetrainConfig(lam=1.0, generations=5, seeds=4)
    full = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path / "full")
    out = tmp_path / "cut"
    _crashed(cfg, out, 2)  # dies inside generation 1: generation 0 is complete
    (out / CHECKPOINT / "state.pkl").unlink()  # as if killed before writing it
    assert (out / CHECKPOINT / "gen_000000.npz").is_file()
    resumed = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=out, resume=True)
    assert resumed.meta["resumed_from_generation"] is None
    np.testing.assert_array_equal(resumed.params, full.params)
    # without --resume it is no unfinished run either: the same start from generation 0
    _crashed(cfg, tmp_path / "cut2", 2)
    (tmp_path / "cut2" / CHECKPOINT / "state.pkl").unlink()
    np.testing.assert_array_equal(
        stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path / "cut2").params, full.params)


def test_a_missing_state_beside_later_blocks_is_refused(tmp_path):
    cfg = stabfw.RetrainConfig(lam=1.0, generations=5, seeds=4)
    _crashed(cfg, tmp_path, 4 * 2 + 2)  # dies inside generation 3
    (tmp_path / CHECKPOINT / "state.pkl").unlink()
    with pytest.raises(stabfw.errors.CheckpointError, match=r"state\.pkl is missing"):
        stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="holds an unfinished run"):
        stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = stabfw.RetrainConfig(lam=1.0, generations=6, seeds=2)
    CRASH_AT.update(generation=5, count=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path)
    finally:
        CRASH_AT.update(generation=None, count=0)
    with pytest.raises(ValueError, match="different configuration"):
        stabfw.run_loop(BernoulliCoin(), cfg.model_copy(update={"lam": 2.0}), out_dir=tmp_path,
                        resume=True)


def test_trajectory_save_load_roundtrip(tmp_path):
    cfg = stabfw.RetrainConfig(lam=2.0, generations=3, seeds=2)
    traj = stabfw.run_loop(BernoulliCoin(), cfg, out_dir=tmp_path)
    back = stabfw.Trajectory.load(tmp_path)
    np.testing.assert_array_equal(back.params, traj.params)
    pd.testing.assert_frame_equal(back.metrics, traj.metrics, check_dtype=False)
    assert back.config["loop"]["lam"] == 2.0
    assert "numpy" in back.environment["packages"]
    with pytest.raises(FileNotFoundError, match=r"no params\.npz"):
        stabfw.Trajectory.load(tmp_path / "nothing")


class _Broken(stabfw.SelfConsumingLoop):
    def __init__(self, flaw: str = ""):
        self.flaw = flaw

    def real_data(self, rng):
        if self.flaw == "nondeterministic_real":
            return np.random.default_rng().normal(size=5)
        return rng.normal(size=5)

    def fit(self, data, init, rng):
        if self.flaw == "in_place" and init is not None:
            init[0] = 99.0
            return init
        return np.array([data.mean(), data.std()])

    def generate(self, state, n, rng):
        return rng.normal(state[0], 1, n + (1 if self.flaw == "wrong_count" else 0))

    def params(self, state):
        if self.flaw == "2d":
            return state.reshape(1, -1)
        if self.flaw == "int":
            return np.array([1, 2])
        return np.asarray(state, dtype=float)

    def with_params(self, state, theta):
        return theta[::-1].copy() if self.flaw == "bad_with_params" else theta.copy()

    def metrics(self, state, rng):
        return {"seed": 1.0} if self.flaw == "reserved_metric" else {"m": "high" if self.flaw
                                                                    == "text_metric" else 1.0}


@pytest.mark.parametrize(("flaw", "message"), [
    ("nondeterministic_real", "real_data(rng) is not deterministic"),
    ("in_place", "modified init in place"),
    ("wrong_count", "returned 9 samples"),
    ("2d", "must be 1-D"),
    ("int", "must be a float vector"),
    ("bad_with_params", "does not round-trip"),
    ("reserved_metric", "reserved for the runner"),
    ("text_metric", "is not a number"),
])
def test_check_loop_reports_each_flaw(flaw, message):
    stabfw.check_loop(_Broken())  # the flawless version passes
    with pytest.raises(stabfw.LoopCheckError, match=re.escape(message)):
        stabfw.check_loop(_Broken(flaw))


def test_check_loop_rejects_non_loops():
    with pytest.raises(stabfw.LoopCheckError, match="must subclass"):
        stabfw.check_loop(object())


def test_params_must_stay_one_dimensional_in_run_loop():
    with pytest.raises(ValueError, match="1-D vector"):
        stabfw.run_loop(_Broken("2d"), stabfw.RetrainConfig(generations=1, seeds=1))


def test_killed_cli_run_resumes_to_identical_results(tmp_path):
    """SIGKILL a real `stabfw run` process mid-run, resume it, compare with a clean run."""
    root = Path(__file__).resolve().parents[2]
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "domain: {name: gaussian, dim: 1, n: 30}\n"
        "loop: {lam: 1.0, policy: accumulate, generations: 50, seeds: 30, vectorize: never}\n"
        "output: {progress: false, report: false}\n")
    cmd = [sys.executable, "-m", "stabfw.cli", "run", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, cwd=root)
    deadline = time.time() + 120
    first_block = killed / CHECKPOINT / "gen_000001.npz"
    while not first_block.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    interrupted = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if interrupted:
        assert not (killed / "metrics.csv").exists()
    subprocess.run([*cmd, "--out", str(killed), "--resume"], env=env, cwd=root, check=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "clean")], env=env, cwd=root, check=True)
    assert (killed / "metrics.csv").read_bytes() == (tmp_path / "clean" / "metrics.csv").read_bytes()
    assert interrupted, "the run finished before it could be killed; make it longer"
