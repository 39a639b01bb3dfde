"""The vectorised Gaussian loop against a per-seed Python loop over the same work.

Issue targets: vectorised / per-seed speed ratio ≥ 50×, and ≥ 10⁶ seed-generations per
second for d = 1, n = 100 on one core. Both paths run in this process, so the ratio does
not depend on the machine's speed; the absolute rate does.
"""

import time

import pytest

import stabfw
from stabfw.domains.gaussian import GaussianLoop

N, D, GENERATIONS = 100, 1, 100


def _run(seeds: int, vectorize: str):
    cfg = stabfw.RetrainConfig(lam=1.0, policy="fixed_real", generations=GENERATIONS,
                               seeds=seeds, vectorize=vectorize)
    return stabfw.run_loop(GaussianLoop(dim=D, n=N), cfg, progress=False)


@pytest.fixture(scope="module")
def per_seed_rate():
    """Seed-generations per second of the per-seed path (the baseline), best of 3."""
    seeds, best = 20, float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        _run(seeds, "never")
        best = min(best, time.perf_counter() - t0)
    return seeds * GENERATIONS / best


def test_vectorised_gaussian_loop(benchmark, per_seed_rate):
    seeds = 10_000
    traj = benchmark.pedantic(_run, args=(seeds, "always"), rounds=3, iterations=1,
                              warmup_rounds=1)
    assert traj.meta["path"] == "vectorized"
    rate = seeds * GENERATIONS / benchmark.stats.stats.min
    benchmark.extra_info.update({
        "seed_generations_per_s": round(rate),
        "per_seed_baseline_per_s": round(per_seed_rate),
        "ratio": round(rate / per_seed_rate, 1),
        "target": "ratio ≥ 50×; ≥ 1e6 seed-generations/s (d = 1, n = 100, one core)",
    })
