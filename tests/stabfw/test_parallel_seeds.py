"""Seeds of one run in parallel (``loop.workers``): bit-identical to one process, resumable."""

import math
import sys
import threading

import numpy as np
import pytest

import stabfw
from stabfw.domains.gaussian import GaussianLoop
from stabfw.errors import GenerationError, LoopError

pytest.importorskip("joblib")


class _StopAt(stabfw.run.callbacks.RunCallback):
    """Ctrl-C once ``generation`` is checkpointed."""

    def __init__(self, generation):
        self.generation = generation

    def on_generation(self, generation, theta, metrics):
        if generation == self.generation:
            raise KeyboardInterrupt


def _same(a, b):
    np.testing.assert_array_equal(a.params, b.params)
    assert a.metrics.equals(b.metrics)


@pytest.mark.parametrize("policy", ["fixed_real", "fresh_real", "accumulate",
                                    "accumulate_subsample"])
def test_workers_give_the_numbers_of_one_process(policy):
    loop = GaussianLoop(dim=2, n=20)
    cfg = stabfw.RetrainConfig(lam=1.0, policy=policy, generations=4, seeds=5,
                               vectorize="never")
    _same(stabfw.run_loop(loop, cfg), stabfw.run_loop(loop, cfg.model_copy(update={"workers": 2})))


def test_workers_run_forecasting_seeds_and_resume_exactly(tmp_path):
    from stabfw.domains.forecasting import ForecastingLoop

    loop = ForecastingLoop(**ForecastingLoop.test_params)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=3, seeds=4)
    serial = stabfw.run_loop(loop, cfg)
    par = cfg.model_copy(update={"workers": 2})
    _same(serial, stabfw.run_loop(loop, par))

    with pytest.raises(KeyboardInterrupt):
        stabfw.run_loop(loop, par, out_dir=tmp_path / "r", callbacks=[_StopAt(1)])
    # resumed in one process: the worker count is not part of the run's fingerprint
    _same(serial, stabfw.run_loop(loop, cfg, out_dir=tmp_path / "r", resume=True))


def test_a_failure_in_a_worker_names_its_seed_and_generation():
    # a loop class the workers cannot import (as in a script's __main__) travels by value
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    loop = GaussianLoop(dim=1, n=10, true_mean=[0.0])
    bad = stabfw.RetrainConfig(lam=1.0, generations=2, seeds=4, vectorize="never", workers=2)
    traj = stabfw.run_loop(loop, bad)
    assert traj.params.shape[:2] == (4, 3)
    with pytest.raises(GenerationError, match=r"seed \d, generation 1") as err:
        stabfw.run_loop(_FailsAtOne(dim=1, n=10), bad)
    assert err.value.generation == 1 and err.value.seed is not None
    assert err.value.trajectory.params.shape[1] == 1  # generation 0 of every seed is kept


class _FailsAtOne(GaussianLoop):
    def fit(self, data, init, rng):
        if init is not None:
            raise RuntimeError("fit failed on purpose")
        return super().fit(data, init, rng)


class _FailsAtThree(GaussianLoop):
    def fit(self, data, init, rng):
        if rng.generation == 3 and rng.seed == 2:
            raise RuntimeError("fit failed on purpose")
        return super().fit(data, init, rng)


def test_tasks_span_generations_and_a_failure_inside_one_is_raised_at_its_generation(
        monkeypatch):
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from stabfw.run.backends import LocalBackend

    submitted = []
    submit = LocalBackend.submit
    monkeypatch.setattr(LocalBackend, "submit",
                        lambda self, fn, task: submitted.append(task) or submit(self, fn, task))
    cfg = stabfw.RetrainConfig(lam=1.0, generations=6, seeds=4, vectorize="never")
    loop = GaussianLoop(dim=1, n=10, true_mean=[0.0])
    _same(stabfw.run_loop(loop, cfg), stabfw.run_loop(loop, cfg.model_copy(update={"workers": 2})))
    # generation 0 is one task per chunk (the cost of a generation is not known yet); the
    # cheap generations after it go in one task per chunk, not one per generation
    assert [(t["generation"], t["last"]) for t in submitted] == [(0, 0), (0, 0), (1, 6), (1, 6)]
    assert not any(t["pack_each"] for t in submitted)  # nothing checkpoints them

    # seed 2 fails at generation 3, inside a task that started at 1: generations 0–2 of
    # every seed are kept, and the error is the one of one process
    with pytest.raises(GenerationError, match=r"seed 2, generation 3") as one:
        stabfw.run_loop(_FailsAtThree(dim=1, n=10), cfg)
    with pytest.raises(GenerationError, match=r"seed 2, generation 3") as err:
        stabfw.run_loop(_FailsAtThree(dim=1, n=10), cfg.model_copy(update={"workers": 2}))
    assert (err.value.seed, err.value.generation, err.value.method) == (2, 3, "fit")
    _same(one.value.trajectory, err.value.trajectory)
    assert err.value.trajectory.params.shape[:2] == (4, 3)


def test_a_checkpointed_run_on_workers_keeps_every_generations_states(tmp_path):
    # its tasks span generations 1–4, and the run stops after generation 2: the checkpoint
    # must hold the states of generation 2, which no task ended at
    loop = GaussianLoop(dim=2, n=20)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=4, seeds=4, vectorize="never", workers=2)
    whole = stabfw.run_loop(loop, cfg)
    with pytest.raises(KeyboardInterrupt):
        stabfw.run_loop(loop, cfg, out_dir=tmp_path / "r", callbacks=[_StopAt(2)])
    _same(whole, stabfw.run_loop(loop, cfg, out_dir=tmp_path / "r", resume=True))


class _Flaky(stabfw.SelfConsumingLoop):
    """A Gaussian mean whose refit now and then turns NaN (``p_nan``) or "doomed"
    (``p_doom``: its metric goes missing, and refitting it fails), by its own draws, so the
    same seeds in every process: seeds that a run stops or that wait for its verdict."""

    def __init__(self, n=20, p_nan=0.0, p_doom=0.0, lock=False):
        self.n, self.p_nan, self.p_doom, self.lock = n, p_nan, p_doom, lock

    def real_data(self, rng):
        return rng.normal(size=self.n)

    def fit(self, data, init, rng):
        if init is not None and init["doomed"]:
            raise RuntimeError("refitting a doomed state")
        u = rng.random() if init is not None else 1.0
        state = {"mean": math.nan if u < self.p_nan else float(np.mean(data)),
                 "doomed": self.p_nan <= u < self.p_nan + self.p_doom}
        if self.lock:
            state["lock"] = threading.Lock()
        return state

    def generate(self, state, n, rng):
        return state["mean"] + rng.normal(size=n)

    def params(self, state):
        return np.array([state["mean"]])

    def with_params(self, state, theta):
        return {**state, "mean": float(theta[0])}

    def metrics(self, state, rng):
        return {} if state["doomed"] else {"spread": 1.0}


@pytest.fixture
def by_value():
    """Loop classes of this module travel to the workers by value (as a script's would)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("on_nonfinite", ["stop", "record"])
def test_nonfinite_seeds_wait_for_the_verdict_and_give_the_serial_numbers(by_value,
                                                                          on_nonfinite):
    # seeds go on to their next generation without waiting for the others, except those
    # whose generation is not finite: whether they go on is the run's verdict on all seeds
    cfg = stabfw.RetrainConfig(lam=1.0, generations=6, seeds=8, on_nonfinite=on_nonfinite)
    loop = _Flaky(p_nan=0.15)
    serial = stabfw.run_loop(loop, cfg)
    par = stabfw.run_loop(loop, cfg.model_copy(update={"workers": 2}))
    _same(serial, par)
    assert par.events == serial.events and len(serial.events) >= 2
    assert {e["action"] for e in par.events} == {"stopped" if on_nonfinite == "stop"
                                                  else "recorded"}


def test_a_seed_stopped_by_a_missing_metric_is_not_run_on_by_a_worker(by_value):
    # a doomed seed's θ is finite and its row has no NaN, so its worker runs it on; the
    # run's verdict (its missing metric is NaN in the table) stops it, and the refit that
    # failed in the worker, which one process never runs, is not the run's error
    cfg = stabfw.RetrainConfig(lam=1.0, generations=5, seeds=8)
    loop = _Flaky(p_doom=0.2)
    serial = stabfw.run_loop(loop, cfg)
    assert any(e["what"] == ["metric spread"] for e in serial.events)
    _same(serial, stabfw.run_loop(loop, cfg.model_copy(update={"workers": 2})))
    with pytest.raises(GenerationError, match="refitting a doomed state"):
        stabfw.run_loop(loop, cfg.model_copy(update={"on_nonfinite": "record"}))


def test_a_state_that_cannot_travel_to_a_worker_says_so(by_value):
    cfg = stabfw.RetrainConfig(lam=1.0, generations=2, seeds=4, workers=2)
    assert stabfw.run_loop(_Flaky(lock=True), cfg.model_copy(update={"workers": 1}))
    with pytest.raises(LoopError, match=r"state of seed \d at generation 0 cannot be "
                                        r"pickled.*loop\.workers: 1"):
        stabfw.run_loop(_Flaky(lock=True), cfg)


def test_a_run_checkpointed_in_one_process_resumes_on_workers(tmp_path):
    loop = GaussianLoop(dim=2, n=20)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=4, seeds=5, vectorize="never")
    whole = stabfw.run_loop(loop, cfg)

    with pytest.raises(KeyboardInterrupt):
        stabfw.run_loop(loop, cfg, out_dir=tmp_path / "r", callbacks=[_StopAt(2)])
    _same(whole, stabfw.run_loop(loop, cfg.model_copy(update={"workers": 2}),
                                 out_dir=tmp_path / "r", resume=True))


@pytest.fixture
def ray_cluster(tmp_path_factory, monkeypatch):
    """A local Ray cluster started the way a user starts one (``ray start --head``): its
    address, and it is stopped afterwards (this head only, not other Ray instances)."""
    import os
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    ray = pytest.importorskip("ray")
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    ip = ray.util.get_node_ip_address()
    # a short session path (Ray's sockets live there) and no token: a throw-away local cluster
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "RAY_AUTH_MODE": "disabled"}
    for k in [k for k in os.environ if k.startswith("RAY_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen([exe, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={tmp}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # the head is up when its GCS port accepts connections
            try:
                socket.create_connection((ip, port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up (exit code {head.poll()})")
                time.sleep(0.5)
        yield f"{ip}:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.mark.slow
def test_seeds_run_on_a_ray_cluster_started_with_ray_start(ray_cluster):
    import ray

    loop = GaussianLoop(dim=2, n=20)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=4, seeds=6, vectorize="never")
    serial = stabfw.run_loop(loop, cfg)
    on_cluster = stabfw.run_loop(loop, cfg.model_copy(update={
        "workers": 2, "backend": "ray", "address": ray_cluster}))
    _same(serial, on_cluster)
    # the run went to that cluster, not to a Ray instance started for it
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == ray_cluster


_STEPPED: list[tuple[str, int]] = []


class _SeenStepping(GaussianLoop):
    """Records which thread advanced how many seeds."""

    def step_batch(self, batch, seeds, generation, config):
        _STEPPED.append((threading.current_thread().name, len(seeds)))
        return super().step_batch(batch, seeds, generation, config)


@pytest.mark.parametrize("policy", ["fixed_real", "fully_synthetic", "accumulate"])
def test_vectorised_batches_advanced_by_threads_give_the_numbers_of_one_batch(policy,
                                                                               tmp_path):
    loop = _SeenStepping(dim=3, n=20)
    cfg = stabfw.RetrainConfig(lam=None if policy == "fully_synthetic" else 1.0, policy=policy,
                               generations=4, seeds=4000, vectorize="always")
    _STEPPED.clear()
    one = stabfw.run_loop(loop, cfg)
    assert {n for _, n in _STEPPED} == {4000}
    par = cfg.model_copy(update={"workers": 2})
    _STEPPED.clear()
    _same(one, stabfw.run_loop(loop, par))
    assert sorted(n for _, n in _STEPPED) == [2000] * 8  # 2 batches × 4 generations
    assert len({name for name, _ in _STEPPED}) == 2

    # a checkpoint of two batches resumes in one thread, and one batch on two
    for first, then, where in [(par, cfg, "a"), (cfg, par, "b")]:
        with pytest.raises(KeyboardInterrupt):
            stabfw.run_loop(loop, first, out_dir=tmp_path / where, callbacks=[_StopAt(2)])
        resumed = stabfw.run_loop(loop, then, out_dir=tmp_path / where, resume=True)
        assert resumed.meta["resumed_from_generation"] == 2
        _same(one, resumed)


def test_few_seeds_stay_in_one_vectorised_batch():
    _STEPPED.clear()
    stabfw.run_loop(_SeenStepping(dim=2, n=20),
                    stabfw.RetrainConfig(lam=1.0, generations=2, seeds=100, workers=2))
    assert _STEPPED == [("MainThread", 100)] * 2


class _MetricsByBatch(GaussianLoop):
    """Reports an extra metric for the batch that starts at seed 0 only."""

    def metrics_batch(self, batch):
        out = super().metrics_batch(batch)
        if batch["first"]:
            out["extra"] = out["cov_logdet"]
        return out

    def init_batch(self, seeds, config):
        return {**super().init_batch(seeds, config), "first": bool(seeds[0] == 0)}


def test_batches_reporting_different_metrics_is_a_loop_error():
    cfg = stabfw.RetrainConfig(lam=1.0, generations=1, seeds=4000, workers=2)
    with pytest.raises(LoopError, match=r"metrics_batch.*for seeds 0–1999 but .* for seeds "
                                        r"2000–3999; every batch of seeds must report the same"):
        stabfw.run_loop(_MetricsByBatch(dim=2, n=20), cfg)
