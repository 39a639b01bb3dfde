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
