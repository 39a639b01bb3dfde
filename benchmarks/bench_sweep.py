"""Sweep backends: the local (loky) speed-up over serial, and Ray's overhead per task.

Issue 7 targets: a 2-worker local sweep ≥ 1.7× faster than the serial one. Ray's overhead
per task is reported (no target). Baselines are timed in the same process; the local
workers are warm (started in a warm-up round), as in any sweep longer than a few cells.
"""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from stabfw.experiments.sweep import run_sweep
from stabfw.run.backends import LocalBackend, RayBackend, SerialBackend
from stabfw.run.config import parse_config

# Four cells of a per-seed Gaussian loop, ~1 s each on one idle core.
CONFIG = {
    "domain": {"name": "gaussian", "dim": 2, "n": 200},
    "loop": {"generations": 30, "seeds": 20, "vectorize": "never"},
    "output": {"report": False, "progress": False},
    "sweep": {"grid": {"loop.lam": [0.25, 0.5, 1, 2]}},
}
ROUNDS = 3
_counter = itertools.count()


def _sweep(tmp_path, backend, workers=None):
    out = tmp_path / f"{backend}-{next(_counter)}"  # a fresh directory: nothing to skip
    res = run_sweep(parse_config(CONFIG), out, backend=backend, workers=workers, progress=False)
    assert not res.failed and res.backend == backend
    return res


def _ceiling() -> float:
    """The speed-up two processes get on this machine right now for pure CPU work (C-level
    ``sum``, no I/O): what the machine allows, against which to read the sweep's ratio."""
    tasks = [range(15_000_000)] * 4
    list(LocalBackend(2).map(sum, tasks[:2]))  # warm
    t0 = time.perf_counter()
    list(SerialBackend().map(sum, tasks))
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(LocalBackend(2).map(sum, tasks))
    return serial / (time.perf_counter() - t0)


def _interleaved(benchmark, serial, parallel, rounds: int = ROUNDS) -> dict[str, float]:
    """``parallel()`` against ``serial()`` and the machine's ceiling, timed in turn within
    each round: medians of the seconds, of the per-round ratio and of its share of that
    round's ceiling.

    This VM's speed drifts by 10–20 % between blocks of timings (seen in bench_anomaly), so
    a block of serial runs followed by a block of parallel ones measures the drift as much as
    the speed-up; within one round all three see the same machine. ``serial`` and the
    ceiling run in pedantic's untimed setup, so the benchmark's own statistics are those of
    the parallel runs.
    """
    times: dict[str, list[float]] = {"ceiling": [], "serial": []}

    def before():
        times["ceiling"].append(_ceiling())
        t0 = time.perf_counter()
        serial()
        times["serial"].append(time.perf_counter() - t0)

    benchmark.pedantic(parallel, setup=before, rounds=rounds, iterations=1, warmup_rounds=0)
    par = list(benchmark.stats.stats.data)
    ratios = [a / b for a, b in zip(times["serial"], par)]
    return {"serial_s": statistics.median(times["serial"]), "parallel_s": statistics.median(par),
            "ratio": statistics.median(ratios),
            "ceiling": statistics.median(times["ceiling"]),
            "share": statistics.median(r / c for r, c in zip(ratios, times["ceiling"]))}


def test_local_sweep_speedup_with_two_workers(benchmark, tmp_path):
    t0 = time.perf_counter()
    _sweep(tmp_path, "local", 2)  # cold: includes starting the two workers
    cold = time.perf_counter() - t0
    m = _interleaved(benchmark, lambda: _sweep(tmp_path, "serial"),
                     lambda: _sweep(tmp_path, "local", 2))
    benchmark.extra_info.update({
        "issue": 7,
        "ratio": round(m["ratio"], 2),
        "target": 1.7,
        "serial_s": round(m["serial_s"], 2),
        "local_2_workers_s": round(m["parallel_s"], 2),
        "cold_ratio": round(m["serial_s"] / cold, 2),
        "machine_ceiling": round(m["ceiling"], 2),
        "share_of_ceiling": round(m["share"], 3),
        "note": "4 cells, warm workers; cold_ratio includes starting them; machine_ceiling is "
                "the 2-process speed-up of pure CPU work (≈ 2 on 2 idle cores); ratio and "
                "share are medians over rounds of (ceiling, serial, local) timed in turn",
    })


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray_overhead_per_task(benchmark, local_ray):
    n = 50
    tasks = [[i] for i in range(n)]
    list(RayBackend().map(len, tasks[:4]))  # warm: workers started, function exported
    t0 = time.perf_counter()
    list(SerialBackend().map(len, tasks))
    base = time.perf_counter() - t0
    benchmark.pedantic(lambda: list(RayBackend().map(len, tasks)), rounds=3, iterations=1)
    per_task_ms = (benchmark.stats.stats.median - base) / n * 1e3
    benchmark.extra_info.update({
        "issue": 7,
        "overhead_ms_per_task": round(per_task_ms, 2),
        "tasks": n,
        "note": "no target: one sweep cell should run ≫ this (≥ 1 s) for Ray to pay off",
    })


# --- seeds of one run in parallel (issue 16) ------------------------------------------------
def _forecasting_run(workers: int):
    import stabfw
    from stabfw.domains.forecasting import ForecastingLoop

    loop = ForecastingLoop(dataset="airline", forecaster="ets", holdout=12, pi_paths=200)
    cfg = stabfw.RetrainConfig(lam=1.0, generations=6, seeds=8, workers=workers)
    return stabfw.run_loop(loop, cfg, progress=False)


def test_forecasting_seeds_in_parallel_with_two_workers(benchmark):
    import numpy as np

    warm = _forecasting_run(2)  # starts the workers, as any run longer than a few seeds
    np.testing.assert_array_equal(warm.params, _forecasting_run(1).params)  # bit-identical
    m = _interleaved(benchmark, lambda: _forecasting_run(1), lambda: _forecasting_run(2),
                     rounds=5)
    benchmark.extra_info.update({
        "issue": 16,
        "ratio": round(m["ratio"], 2),
        "target": "ratio ≥ 1.8 (or ≥ 90 % of machine_ceiling)",
        "serial_s": round(m["serial_s"], 2),
        "two_workers_s": round(m["parallel_s"], 2),
        "machine_ceiling": round(m["ceiling"], 2),
        "share_of_ceiling": round(m["share"], 3),
        "met": bool(m["ratio"] >= 1.8 or m["share"] >= 0.9),
        "note": "8 seeds × 6 generations of the airline ETS loop, loop.workers = 2 (loky, one "
                "BLAS thread each) against one process, results bit-identical; medians over "
                "5 rounds of (ceiling, serial, parallel) timed in turn",
    })
