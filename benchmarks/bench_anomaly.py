"""One generation of the anomaly loop against a bare fit of the same detector (issue 6).

A generation = score the stream (the whole stream once under the current state, reused by
the selection and the admit-rate metrics), select (draw the stream until ``n`` points are
admitted, cut the prefix, count labels), mix, and fit. Scoring the
stream is the detector's own work (a deployed detector scores its traffic anyway); what
the loop adds is the selection, the mixing and its fit wrapper. The fit step should cost
what a plain scikit-learn fit with the same ``contamination`` (and, for the mixture, the
same warm start) costs: the threshold is read from the estimator's ``offset_`` where it
has one, not recomputed.

Reported per detector: seconds for scoring, selection, fit and the bare fit, and
``ratio = (generation − stream scoring) / bare fit`` (target ≤ 1.2, issues 6 and 16), with the
fit step's own ratio and the whole generation's ratio beside it. The five are timed in turn
within each of 21 rounds and reported as medians, so that all see the same machine.

Run: ``.venv/bin/python -m pytest benchmarks/bench_anomaly.py -m "" -p no:cacheprovider
--benchmark-only -s``
"""

import dataclasses
import statistics
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import stabfw
from stabfw.core.streams import stream
from stabfw.domains.anomaly import AnomalyLoop
from stabfw.run.policies import build_training_set

CASES = {
    "envelope": {"detector": "envelope", "n_components": 10},
    "gmm": {"detector": "gmm", "n_components": 10, "mixture_components": 2},
    "iforest": {"detector": "iforest"},
    "lof": {"detector": "lof"},
}
LAM = 1.0
REPEATS = 7


def _bare_fit(name: str, X: np.ndarray, q: float, seed: int, init=None):
    """The same detector fitted directly with scikit-learn: same seed, same warm start, and
    its threshold (scikit-learn computes it inside ``fit`` from ``contamination``, except
    for the mixture, whose user scores the training data once)."""
    if name == "envelope":
        from sklearn.covariance import EllipticEnvelope

        return EllipticEnvelope(contamination=q, random_state=seed).fit(X)
    if name == "gmm":
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(2, reg_covar=1e-4, random_state=seed,
                             weights_init=init.weights_, means_init=init.means_,
                             precisions_init=init.precisions_).fit(X)
        return gm, np.quantile(-gm.score_samples(X), 1 - q)
    if name == "iforest":
        from sklearn.ensemble import IsolationForest

        return IsolationForest(contamination=q, random_state=seed).fit(X)
    from sklearn.neighbors import LocalOutlierFactor

    return LocalOutlierFactor(novelty=True, contamination=q).fit(X)


def _interleaved_medians(parts: dict, rounds: int = 3 * REPEATS) -> dict[str, float]:
    """Median seconds of each function, timed in turn within every round."""
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(rounds):
        for k, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_generation_overhead(benchmark, name):
    warnings.simplefilter("ignore", RuntimeWarning)
    loop = AnomalyLoop(dataset="breast_cancer", contamination=0.2, **CASES[name])
    cfg = stabfw.RetrainConfig(lam=LAM)
    real = loop.real_data(stream(0, -1, "real"))
    state = loop.fit(real, None, stream(0, 0, "fit"))
    n = cfg.n_synthetic(len(real))
    det = loop.detector_spec

    # scoring alone: the whole stream under this state, once per generation (the loop
    # reuses it for the selection and for the admit-rate metrics; issue 16)
    split = loop.split
    stream_rows = np.concatenate([split.stream_normal, split.stream_anomaly])
    batch, stats = loop.select(state, n, stream(0, 1, "generate"))

    def fresh(st):  # the state as the fit returns it: nothing scored yet
        return dataclasses.replace(st, scores={})

    train, _ = build_training_set(loop, cfg, real, batch, None, stream(0, 1, "mix"))
    X = np.array(train.data.X)
    seed = int(stream(0, 1, "fit").integers(2**31 - 1))  # the seed the loop's fit draws

    def generation():
        syn = loop.generate(fresh(state), n, stream(0, 1, "generate"))
        tr, _ = build_training_set(loop, cfg, real, syn, None, stream(0, 1, "mix"))
        return loop.fit(tr.data, state, stream(0, 1, "fit"))

    parts = {
        "score": lambda: det.score(state.model, loop.features[stream_rows]),
        "select": lambda: loop.select(fresh(state), n, stream(0, 1, "generate")),
        "fit": lambda: loop.fit(train.data, state, stream(0, 1, "fit")),
        "bare": lambda: _bare_fit(name, X, loop.reject_fraction, seed, state.model),
        "generation": generation,
    }
    # interleaved, round by round, so that every part sees the same machine (this VM's
    # speed drifts by 10–20 % between blocks of timings); medians over the rounds
    times = _interleaved_medians(parts)
    t_score, t_select_total, t_fit, t_bare, t_gen = (
        times[k] for k in ("score", "select", "fit", "bare", "generation"))
    benchmark.pedantic(generation, rounds=REPEATS, iterations=1)
    info = {
        "issue": 16,
        "ratio": round((t_gen - t_score) / t_bare, 3),
        "target_max": 1.2,
        "scoring_s": round(t_score, 5),
        "selection_s": round(max(t_select_total - t_score, 0.0), 5),
        "fit_s": round(t_fit, 5),
        "bare_fit_s": round(t_bare, 5),
        "fit_step_ratio": round(t_fit / t_bare, 3),
        "generation_ratio": round(t_gen / t_bare, 3),
        "inspected": stats.inspected,
        "stream_points": int(stream_rows.size),
        "train_size": len(train.data),
        "note": f"{name}, breast_cancer, n_clean=100, λ={LAM}, contamination 0.2",
    }
    benchmark.extra_info.update(info)
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
