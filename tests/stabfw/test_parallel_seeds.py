"""Seeds of one run in parallel (``loop.workers``): bit-identical to one process, resumable."""

import sys

import numpy as np
import pytest

import stabfw
from stabfw.domains.gaussian import GaussianLoop
from stabfw.errors import GenerationError

pytest.importorskip("joblib")


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

    class Stop(stabfw.run.callbacks.RunCallback):
        def on_generation(self, generation, theta, metrics):
            if generation == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stabfw.run_loop(loop, par, out_dir=tmp_path / "r", callbacks=[Stop()])
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
