"""stabfw beside a peer's method on the same work, and the framework's own overhead (issue 16).

The peer is the Gaussian self-consuming loop of Schaeffer et al., "Collapse or Thrive?
Perils and Promises of Synthetic Data in a Self-Generating World" (2024), code at
RylanSchaeffer/KoyejoLab-Collapse-or-Thrive, ``src/fit_gaussians/fit_gaussians.py``. Their
method, re-expressed here without W&B: per seed, draw n points from N(0, σ²I); then each
iteration fits the mean and the biased covariance (``np.cov(..., bias=True)``), draws n new
points with ``np.random.multivariate_normal`` and either replaces the data with them
(*Replace*) or appends them (*Accumulate*, the real points kept). In stabfw terms that is
``fully_synthetic`` (Replace) and ``accumulate`` with λ = 1 (Accumulate), ``ddof = 0``.

Reported per (d, setting), 1000 seeds × 100 generations, n = 100, both timed in this
process: ``ratio`` = peer seconds / stabfw seconds (targets: ≥ 100× at d = 1, ≥ 50× at
d = 10 and 31), and the agreement of the final log-det drift E[log det Σ_100 − log det Σ_0]:
the two means, their difference in standard errors of the difference (``z``), and for
Replace the closed form 100·Σ_i [ψ((n − i)/2) + log(2/n)] (i = 1..d).

Also here: the user-loop overhead (the README's coin loop through ``run_loop`` against the
same draws and fits in a plain loop; target ≤ 10 µs per seed-generation) and the rate of
the vectorised Gaussian at d = 10 with 10⁴ seeds (target ≥ 10⁶ seed-generations/s).

Run: ``.venv/bin/python -m pytest benchmarks/bench_peers.py -m "" -p no:cacheprovider
--benchmark-only -s``
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from scipy import special

import stabfw
from stabfw.domains.gaussian import GaussianLoop

SEEDS, GENERATIONS, N = 1000, 100, 100
TARGET = {1: 100, 10: 50, 31: 50}


def peer_final_logdet_drift(d: int, setting: str, seeds: int = SEEDS,
                            generations: int = GENERATIONS, n: int = N) -> np.ndarray:
    """log det Σ_G − log det Σ_0 per seed, by the peer's method (see the module docstring).

    Generation 0 is the fit on the n real points; each of the ``generations`` steps draws
    n points from the last fit, replaces or accumulates, and refits, as their loop does.
    """
    out = np.empty(seeds)
    for s in range(seeds):
        np.random.seed(s)  # noqa: NPY002 - their per-run seeding, one global RandomState
        data = np.random.multivariate_normal(np.zeros(d), np.eye(d), size=n)  # noqa: NPY002
        mean, cov = data.mean(axis=0), np.cov(data, rowvar=False, bias=True).reshape(d, d)
        logdet0 = np.linalg.slogdet(cov)[1]
        for _ in range(generations):
            new = np.random.multivariate_normal(mean, cov, size=n)  # noqa: NPY002
            data = new if setting == "Replace" else np.concatenate((data, new))
            mean = data.mean(axis=0)
            cov = np.cov(data, rowvar=False, bias=True).reshape(d, d)
        out[s] = np.linalg.slogdet(cov)[1] - logdet0
    return out


def _stabfw_config(setting: str, seeds: int = SEEDS) -> stabfw.RetrainConfig:
    kw = ({"policy": "fully_synthetic"} if setting == "Replace"
          else {"policy": "accumulate", "lam": 1.0})
    return stabfw.RetrainConfig(generations=GENERATIONS, seeds=seeds, **kw)


def _stabfw_drift(traj) -> np.ndarray:
    logdet = traj.metric("cov_logdet")
    return logdet[:, -1] - logdet[:, 0]


def _replace_closed_form(d: int, n: int = N, generations: int = GENERATIONS
                         ) -> tuple[float, float]:
    """Mean and variance of Replace's final log-det drift: det of the refitted covariance
    = det Σ · Π_i χ²_{n−i} / n per generation (Bartlett), independent across generations."""
    k = (n - np.arange(1, d + 1)) / 2
    return (generations * float(np.sum(special.digamma(k) + math.log(2 / n))),
            generations * float(np.sum(special.polygamma(1, k))))


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["Replace", "Accumulate"])
@pytest.mark.parametrize("d", [1, 10, 31])
def test_gaussian_against_collapse_or_thrive(benchmark, d, setting):
    loop = GaussianLoop(dim=d, n=N)
    cfg = _stabfw_config(setting)
    t0 = time.perf_counter()
    peer = peer_final_logdet_drift(d, setting)
    t_peer = time.perf_counter() - t0
    traj = benchmark.pedantic(stabfw.run_loop, args=(loop, cfg), kwargs={"progress": False},
                              rounds=3, iterations=1, warmup_rounds=1)
    assert traj.meta["path"] == "vectorized"
    t_ours = benchmark.stats.stats.median
    ours = _stabfw_drift(traj)
    # at d = 31 Replace the covariance's condition number passes 1/ε: the peer's np.cov
    # and slogdet lose the small eigenvalues there (its drift is biased, or −inf), while
    # stabfw carries the exact triangular factor; −inf seeds are counted and left out, and
    # Replace's drift is also judged against its closed form
    singular = int(np.sum(~np.isfinite(ours)) + np.sum(~np.isfinite(peer)))
    ours, peer = ours[np.isfinite(ours)], peer[np.isfinite(peer)]
    se = math.sqrt(peer.var(ddof=1) / peer.size + ours.var(ddof=1) / ours.size)
    z = (ours.mean() - peer.mean()) / se
    info = {
        "issue": 16,
        "ratio": round(t_peer / t_ours, 1),
        "target": TARGET[d],
        "peer_s": round(t_peer, 2),
        "stabfw_s": round(t_ours, 3),
        "stabfw_us_per_seed_gen": round(t_ours / (SEEDS * GENERATIONS) * 1e6, 3),
        "logdet_drift_stabfw": round(float(ours.mean()), 3),
        "logdet_drift_peer": round(float(peer.mean()), 3),
        "drift_se": round(se, 3),
        "drift_z": round(float(z), 2),
        "seeds_singular": singular,
        "note": (f"d = {d}, {setting}, {SEEDS} seeds × {GENERATIONS} generations, n = {N}; "
                 f"drift agrees with the peer within 3 SE: {abs(z) <= 3}"),
    }
    if setting == "Replace":
        mean, var = _replace_closed_form(d)
        z_exact = (ours.mean() - mean) / math.sqrt(var / ours.size)
        info["drift_closed_form"] = round(mean, 3)
        info["drift_z_closed_form"] = round(float(z_exact), 2)
        info["note"] += f"; stabfw within 3 SE of the closed form: {abs(z_exact) <= 3}"
    benchmark.extra_info.update(info)
    print(f"\n{d} {setting}: " + ", ".join(f"{k}={v}" for k, v in info.items()))


# --- the framework's overhead on a user's own loop -----------------------------------------
class BernoulliCoin(stabfw.SelfConsumingLoop):
    """The README's coin: a bias fitted by maximum likelihood, retrained on its own flips."""

    def __init__(self, n=100, p_true=0.3):
        self.n, self.p_true = n, p_true

    def real_data(self, rng):
        return (rng.random(self.n) < self.p_true).astype(float)

    def fit(self, data, init, rng):
        return float(np.mean(data))

    def generate(self, state, n, rng):
        return (rng.random(n) < state).astype(float)

    def params(self, state):
        return np.array([state])

    def with_params(self, state, theta):
        return float(theta[0])


def _plain_coin_loop(loop: BernoulliCoin, seeds: int, generations: int) -> np.ndarray:
    """The same draws and fits as ``run_loop`` (fixed_real, λ = 1), without the framework."""
    thetas = np.empty((seeds, generations + 1))
    for s in range(seeds):
        rng = np.random.default_rng(s)
        real = loop.real_data(rng)
        state = loop.fit(real, None, rng)
        thetas[s, 0] = loop.params(state)[0]
        for t in range(1, generations + 1):
            synthetic = loop.generate(state, loop.n, rng)
            state = loop.fit(np.concatenate([real, synthetic]), state, rng)
            thetas[s, t] = loop.params(state)[0]
    return thetas


def test_user_loop_overhead(benchmark):
    seeds, generations = 100, 100
    loop = BernoulliCoin()
    cfg = stabfw.RetrainConfig(lam=1.0, policy="fixed_real", generations=generations, seeds=seeds)
    plain = []
    for _ in range(5):  # the baseline, interleaved with nothing: best of 5
        t0 = time.perf_counter()
        _plain_coin_loop(loop, seeds, generations)
        plain.append(time.perf_counter() - t0)
    benchmark.pedantic(stabfw.run_loop, args=(loop, cfg), kwargs={"progress": False},
                       rounds=5, iterations=1, warmup_rounds=1)
    per = seeds * generations
    t_plain, t_fw = min(plain) / per * 1e6, benchmark.stats.stats.min / per * 1e6
    benchmark.extra_info.update({
        "issue": 16,
        "ratio": round(t_fw - t_plain, 2),
        "target_max": 10,
        "target": "overhead ≤ 10 µs per seed-generation",
        "run_loop_us_per_seed_gen": round(t_fw, 2),
        "plain_loop_us_per_seed_gen": round(t_plain, 2),
        # the machine ran the plain loop in 4.7 µs: the same target in this
        # machine's speed, for reading the ratio (the status is on the 10 µs)
        "target_scaled_to_this_machine_us": round(10 * t_plain / 4.7, 1),
        "note": "ratio column = framework overhead in µs per seed-generation (run_loop − plain); "
                "the README's coin loop, 100 seeds × 100 generations, fixed_real, λ = 1",
    })


def test_gaussian_rate_d10(benchmark):
    seeds = 10_000
    loop = GaussianLoop(dim=10, n=N)
    workers = os.cpu_count() or 1
    cfg = stabfw.RetrainConfig(lam=1.0, policy="fixed_real", generations=GENERATIONS,
                               seeds=seeds, workers=workers)
    benchmark.pedantic(stabfw.run_loop, args=(loop, cfg), kwargs={"progress": False},
                       rounds=3, iterations=1, warmup_rounds=1)
    rate = seeds * GENERATIONS / benchmark.stats.stats.median
    t0 = time.perf_counter()
    stabfw.run_loop(loop, cfg.model_copy(update={"workers": 1}), progress=False)
    rate_one = seeds * GENERATIONS / (time.perf_counter() - t0)
    benchmark.extra_info.update({
        "issue": 16,
        "ratio": round(rate / 1e6, 3),
        "target": "ratio ≥ 1 (= 10⁶ seed-generations/s)",
        "seed_generations_per_s": round(rate),
        "seed_generations_per_s_one_thread": round(rate_one),
        "note": f"ratio column = rate / 10⁶; d = 10, n = 100, fixed_real λ = 1, 10⁴ seeds × 100 "
                f"generations through run_loop, loop.workers = {workers} (one batch per thread; "
                f"one thread: {rate_one / 1e6:.3f})",
    })
