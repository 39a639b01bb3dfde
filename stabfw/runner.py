"""Run a self-consuming loop over generations, with atomic per-generation checkpoints."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabfw.atomic import load_pickle, save_pickle
from stabfw.config import RetrainConfig
from stabfw.hooks import resolve_hook
from stabfw.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.policies import build_training_set
from stabfw.provenance import environment
from stabfw.streams import real_stream_generation, stream
from stabfw.trajectory import Trajectory

__all__ = ["CHECKPOINT", "run_loop"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pkl"


def _as_config(config: RetrainConfig | dict[str, Any]) -> RetrainConfig:
    return config if isinstance(config, RetrainConfig) else RetrainConfig.model_validate(config)


def _params_vector(loop: SelfConsumingLoop, state: Any, where: str) -> np.ndarray:
    theta = np.asarray(loop.params(state), dtype=float)
    if theta.ndim != 1:
        raise ValueError(f"{type(loop).__name__}.params returned shape {theta.shape} at {where}; "
                         "it must be a 1-D vector")
    return theta


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="gen", disable=not enabled, leave=False)


def run_loop(
    loop: SelfConsumingLoop,
    config: RetrainConfig | dict[str, Any],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    record: dict[str, Any] | None = None,
) -> Trajectory:
    """Retrain ``loop`` on its own outputs for ``config.generations`` generations.

    Parameters
    ----------
    loop : SelfConsumingLoop
    config : RetrainConfig or dict
    out_dir : path, optional
        Where to checkpoint each generation (``checkpoint.pkl``, replaced atomically) and
        to write the trajectory at the end. Without it nothing is written.
    resume : bool
        Continue from ``out_dir``'s checkpoint. The result equals an uninterrupted run,
        because every random draw comes from a stream named by (seed, generation,
        purpose) rather than from a generator's running state.
    progress : bool, optional
        Show a progress bar (default: when ``out_dir`` is given).
    record : dict, optional
        The resolved run file to store beside the results (``stabfw run`` passes it).

    Returns
    -------
    Trajectory
    """
    cfg = _as_config(config)
    seeds = np.asarray(cfg.seed_list, dtype=np.int64)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT if out is not None else None
    progress = (out is not None) if progress is None else progress
    recorded = record if record is not None else {"loop": cfg.model_dump(mode="json")}
    signature = {"loop": cfg.model_dump(mode="json"), "domain": repr(loop)}

    ckpt = None
    if ckpt_path is not None and ckpt_path.is_file():
        if resume:
            ckpt = load_pickle(ckpt_path)
            if ckpt["signature"] != signature:
                raise ValueError(
                    f"{ckpt_path} was written by a different configuration; refusing to resume.\n"
                    f"  checkpoint: {ckpt['signature']}\n  now:        {signature}")
            log.info("resuming %s at generation %d", out, ckpt["generation"] + 1)
        else:
            log.warning("%s holds a checkpoint of an unfinished run; starting afresh "
                        "(pass resume=True to continue it)", out)
    elif resume and out is not None:
        log.info("nothing to resume in %s; starting from generation 0", out)

    reason = None
    if isinstance(loop, VectorizedLoop):
        reason = loop.supports_vectorized(cfg)
    else:
        reason = f"{type(loop).__name__} has no vectorised path"
    if cfg.vectorize == "always" and reason is not None:
        raise ValueError(f"loop.vectorize='always' but {reason}")
    vectorized = cfg.vectorize != "never" and reason is None

    t0 = time.perf_counter()
    runner = _run_vectorized if vectorized else _run_per_seed
    params, metrics = runner(loop, cfg, seeds, ckpt, ckpt_path, signature, progress)
    elapsed = time.perf_counter() - t0

    metrics = metrics.sort_values(["seed", "generation"], kind="stable").reset_index(drop=True)
    traj = Trajectory(
        params=params,
        metrics=metrics,
        seeds=seeds,
        config=recorded,
        environment=environment(),
        meta={
            "path": "vectorized" if vectorized else "per_seed",
            "seconds": round(elapsed, 3),
            "resumed_from_generation": None if ckpt is None else int(ckpt["generation"]),
            "domain": repr(loop),
        },
    )
    if out is not None:
        traj.save(out)
        if ckpt_path.is_file():
            ckpt_path.unlink()
    return traj


def _metric_row(seed: int, generation: int, dist: float, n_real: int, n_syn: int,
                metrics: dict[str, float]) -> dict[str, Any]:
    row = {"seed": int(seed), "generation": generation, "n_real": n_real, "n_synthetic": n_syn,
           "dist_to_theta_star": dist}
    for k, v in metrics.items():
        row[k] = float(v)
    return row


def _real_stream(cfg: RetrainConfig, seed: int, generation: int):
    return stream(seed, real_stream_generation(cfg.policy, generation), "real")


def _run_per_seed(loop, cfg, seeds, ckpt, ckpt_path, signature, progress):
    curate, correct = resolve_hook(cfg.curate), resolve_hook(cfg.correct)
    fixed_real = [loop.real_data(_real_stream(cfg, int(s), 0)) for s in seeds]
    n0 = [loop.data_size(r) for r in fixed_real]
    if ckpt is None:
        states, pools, thetas, rows = [], [None] * len(seeds), [], []
        for i, s in enumerate(seeds):
            state = loop.fit(fixed_real[i], None, stream(int(s), 0, "fit"))
            theta = _params_vector(loop, state, f"seed {s}, generation 0")
            states.append(state)
            thetas.append([theta])
            m = loop.metrics(state, stream(int(s), 0, "metrics"))
            rows.append(_metric_row(s, 0, 0.0, n0[i], 0, m))
        start = 1
    else:
        states, pools, thetas, rows = ckpt["states"], ckpt["pools"], ckpt["thetas"], ckpt["rows"]
        start = ckpt["generation"] + 1

    bar = _progress(cfg.generations, "retraining", progress)
    bar.update(start - 1)
    for t in range(start, cfg.generations + 1):
        for i, s in enumerate(seeds):
            s = int(s)
            state = states[i]
            real = fixed_real[i] if cfg.policy != "fresh_real" else loop.real_data(
                _real_stream(cfg, s, t))
            m = cfg.n_synthetic(n0[i])
            synthetic = loop.generate(state, m, stream(s, t, "generate"))
            real_for_hooks = None if cfg.fully_synthetic else real
            if curate is not None:
                synthetic = curate(synthetic, state=state, loop=loop,
                                   rng=stream(s, t, "curate"), real=real_for_hooks)
            if correct is not None:
                synthetic = correct(synthetic, state=state, loop=loop,
                                    rng=stream(s, t, "correct"), real=real_for_hooks)
            train, pools[i] = build_training_set(loop, cfg, real, synthetic, pools[i],
                                                 stream(s, t, "mix"))
            new_state = loop.fit(train.data, state if cfg.warm_start else None,
                                 stream(s, t, "fit"))
            theta = _params_vector(loop, new_state, f"seed {s}, generation {t}")
            if theta.shape != thetas[i][0].shape:
                raise ValueError(f"{type(loop).__name__}.params changed length from "
                                 f"{thetas[i][0].size} to {theta.size} at generation {t}")
            states[i] = new_state
            thetas[i].append(theta)
            dist = float(np.linalg.norm(theta - thetas[i][0]))
            metrics = loop.metrics(new_state, stream(s, t, "metrics"))
            rows.append(_metric_row(s, t, dist, train.n_real, train.n_synthetic, metrics))
        if ckpt_path is not None:
            save_pickle(ckpt_path, {"signature": signature, "generation": t, "states": states,
                                    "pools": pools, "thetas": thetas, "rows": rows})
        bar.update(1)
    bar.close()
    return np.stack([np.stack(th) for th in thetas]), pd.DataFrame(rows)


def _run_vectorized(loop, cfg, seeds, ckpt, ckpt_path, signature, progress):
    if ckpt is None:
        batch = loop.init_batch(seeds, cfg)
        thetas = [np.asarray(loop.params_batch(batch), dtype=float)]
        rows = [_batch_columns(loop, batch, seeds, 0, thetas)]
        start = 1
    else:
        batch, thetas, rows = ckpt["batch"], ckpt["thetas"], ckpt["rows"]
        start = ckpt["generation"] + 1
    bar = _progress(cfg.generations, "retraining (vectorised)", progress)
    bar.update(start - 1)
    for t in range(start, cfg.generations + 1):
        batch = loop.step_batch(batch, seeds, t, cfg)
        thetas.append(np.asarray(loop.params_batch(batch), dtype=float))
        rows.append(_batch_columns(loop, batch, seeds, t, thetas))
        if ckpt_path is not None:
            save_pickle(ckpt_path, {"signature": signature, "generation": t, "batch": batch,
                                    "thetas": thetas, "rows": rows})
        bar.update(1)
    bar.close()
    columns = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return np.stack(thetas, axis=1), pd.DataFrame(columns)


def _batch_columns(loop, batch, seeds, t, thetas) -> dict[str, np.ndarray]:
    # Column arrays, not row dicts: 10^4 seeds x 10^2 generations must stay cheap.
    metrics = {k: np.asarray(v, dtype=float) for k, v in loop.metrics_batch(batch).items()}
    n = len(seeds)
    cols = {
        "seed": np.asarray(seeds, dtype=np.int64),
        "generation": np.full(n, t, dtype=np.int64),
        "n_real": metrics.pop("n_real", np.full(n, math.nan)).astype(np.int64),
        "n_synthetic": metrics.pop("n_synthetic", np.full(n, math.nan)).astype(np.int64),
        "dist_to_theta_star": np.linalg.norm(thetas[-1] - thetas[0], axis=1),
    }
    cols.update(metrics)
    return cols
