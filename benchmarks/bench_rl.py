"""RL domain: rollout throughput per execution path, and one generation split into parts.

Run with ``make bench`` or::

    .venv/bin/python -m pytest benchmarks/bench_rl.py -m "" -p no:cacheprovider \
        --benchmark-only -s

Throughput is environment steps per second *including policy inference* (the
batch-invariant numpy forward of a 64-64 MLP), reported as ratios against the
single-environment path measured in the same process; nothing here asserts a time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("gymnasium")
torch = pytest.importorskip("torch")

from stabfw.core.streams import stream  # noqa: E402
from stabfw.domains.rl import BehaviorCloningLoop, make_runner  # noqa: E402

N_PAIRS = 4000
NUM_ENVS = 8


def _trained(env_id: str, **kw) -> tuple[BehaviorCloningLoop, object]:
    torch.set_num_threads(1)
    loop = BehaviorCloningLoop(env_id=env_id, hidden=[64, 64], num_envs=NUM_ENVS, **kw)
    real = loop.real_data(stream(0, -1, "real"))
    return loop, loop.fit(real, None, stream(0, 0, "fit"))


def _steps_per_second(loop, state, runner, repeats: int = 3) -> float:
    best = np.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        ro = loop.policy_rollout(state, stream(r, 1, "generate"), n_pairs=N_PAIRS, runner=runner)
        best = min(best, time.perf_counter() - t0)
        assert int(ro.lengths.sum()) >= N_PAIRS
    return N_PAIRS / best


@pytest.mark.parametrize("env_id, modes, kw", [
    ("CartPole-v1", ("single", "sync", "native"), {"n_expert": 2000, "epochs": 20}),
    ("Pendulum-v1", ("single", "sync"), {"n_expert": 4000, "epochs": 30, "lr": 3e-3}),
])
def test_rollout_throughput(benchmark, env_id, modes, kw):
    loop, state = _trained(env_id, **kw)
    rates = {}
    for mode in modes:
        runner = make_runner(env_id, mode, NUM_ENVS, loop._max_steps)
        rates[mode] = _steps_per_second(loop, state, runner)
        runner.close()
    base = rates["single"]
    fastest = max(rates, key=rates.get)
    benchmark.extra_info.update({
        "ratio": round(rates[fastest] / base, 2),
        "issue": 4,
        "note": f"ratio = {fastest} / single-env steps/s ({NUM_ENVS} slots, inference "
                "included); no target set",
    })
    benchmark.extra_info.update({f"{m}_steps_per_s": round(v) for m, v in rates.items()})
    benchmark.extra_info.update({f"{m}_vs_single": round(v / base, 2) for m, v in rates.items()})
    print(f"\n{env_id} rollout throughput ({NUM_ENVS} slots, policy inference included): "
          + ", ".join(f"{m} {v:,.0f} steps/s ({v / base:.2f}x single)"
                      for m, v in rates.items()))
    runner = make_runner(env_id, fastest, NUM_ENVS, loop._max_steps)
    benchmark.pedantic(loop.policy_rollout, args=(state, stream(9, 1, "generate")),
                       kwargs={"n_pairs": N_PAIRS, "runner": runner}, rounds=3, iterations=1)
    runner.close()


@pytest.mark.parametrize("env_id, kw", [
    ("CartPole-v1", {"n_expert": 2000, "epochs": 10}),
    ("Pendulum-v1", {"n_expert": 4000, "epochs": 15, "lr": 3e-3}),
])
def test_generation_wall_time_split(benchmark, env_id, kw):
    """One generation at λ = 4: generate 4n own pairs, mix, warm-started fit, metrics."""
    loop, state = _trained(env_id, **kw)
    real = loop.real_data(stream(0, -1, "real"))
    lam = 4
    parts: dict[str, float] = {}

    def generation():
        t0 = time.perf_counter()
        own = loop.generate(state, lam * len(real), stream(0, 1, "generate"))
        t1 = time.perf_counter()
        new = loop.fit(loop.concat([real, own]), state, stream(0, 1, "fit"))
        t2 = time.perf_counter()
        loop.metrics(new, stream(0, 1, "metrics"))
        t3 = time.perf_counter()
        parts.update(rollout=t1 - t0, fit=t2 - t1, metrics=t3 - t2)

    benchmark.pedantic(generation, rounds=2, iterations=1)
    total = sum(parts.values())
    benchmark.extra_info.update({"issue": 4, "note": "wall time of one λ = 4 generation by part"})
    benchmark.extra_info.update({f"{k}_s": round(v, 3) for k, v in parts.items()})
    benchmark.extra_info.update({f"{k}_share": round(v / total, 3) for k, v in parts.items()})
    print(f"\n{env_id} one generation (λ = {lam}, n = {len(real)}, {loop.rollout_mode} "
          f"rollouts): " + ", ".join(f"{k} {v:.2f} s ({v / total:.0%})"
                                     for k, v in parts.items()))
