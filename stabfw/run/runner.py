"""Run a self-consuming loop over generations, with verified per-generation checkpoints.

:func:`run_loop` is the one runner. Per seed it is a plain loop over seeds calling the
generation step (:class:`~stabfw.run.step.GenerationStep`); a vectorised domain advances all
seeds at once instead. Around that it keeps the promises of a run:

* what a loop returns is checked as it comes (θ a real 1-D vector of constant length, the
  batch of the size asked for, metrics numbers under names the runner does not use); a
  broken promise is a :class:`~stabfw.errors.LoopError` naming the seed, the generation
  and the method, and an exception of the loop's own code is re-raised as a
  :class:`~stabfw.errors.GenerationError` saying the same; either carries the generations
  computed before (``err.trajectory``), which the checkpoint holds too;
* a non-finite θ or a NaN metric is an *event* (``loop.on_nonfinite``): the seed stops
  (default) or the event is recorded, and the trajectory's ``events`` name every one;
* one writer per run directory (:class:`~stabfw.run.rundir.RunLock`); a finished run is
  never overwritten (``force=True`` replaces it; ``resume=True`` on it is a no-op when the
  fingerprint is the same, refused when not); a resume verifies every checkpoint file and
  the fingerprint first.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import pickle
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabfw._util.atomic import clean_temp_files
from stabfw.core.checks import RESERVED_COLUMNS, loop_problems, metric_problem, theta_problem
from stabfw.core.hooks import check_hook
from stabfw.core.loop import SelfConsumingLoop
from stabfw.core.streams import stream
from stabfw.errors import (
    ConfigError,
    GenerationError,
    LoopCheckError,
    LoopError,
    RunDirError,
    RunError,
    RunInterrupted,
    StabfwError,
)
from stabfw.run.backends import make_backend
from stabfw.run.callbacks import RunCallback
from stabfw.run.checkpoint import Checkpoint
from stabfw.run.config import RetrainConfig
from stabfw.run.provenance import environment
from stabfw.run.registry import validate_loop
from stabfw.run.rundir import (
    MANIFEST,
    RESULT_FILES,
    Fingerprint,
    RunLock,
    ensure_dir,
    fingerprint,
    read_manifest,
    write_manifest,
)
from stabfw.run.sizing import check_size, estimate_size
from stabfw.run.step import GenerationStep, as_retrain_config
from stabfw.run.trajectory import Trajectory, nonfinite_summary

__all__ = ["CHECKPOINT", "run_loop"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"
#: Files of a run directory that a forced restart removes (besides the checkpoint).
_OWN_FILES = (*RESULT_FILES, MANIFEST, "summary.json", "report.html", "report.png",
              "analysis.png")


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="gen", disable=not enabled, leave=False)


# --- arguments ------------------------------------------------------------------------
def _check_arguments(loop: Any, resume: Any, force: Any, progress: Any, checkpoint: Any,
                     callbacks: Any) -> list[RunCallback]:
    if not isinstance(loop, SelfConsumingLoop):
        raise LoopCheckError(loop, [*loop_problems(loop, checks=["interface"]),
                                    "run_loop needs a stabfw.SelfConsumingLoop (see "
                                    "stabfw.check_loop)"])
    for name, value in (("resume", resume), ("force", force), ("checkpoint", checkpoint)):
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"run_loop: {name} must be True or False, got {value!r}")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise ConfigError(f"run_loop: progress must be True, False or None, got {progress!r}")
    if resume and force:
        raise ConfigError("run_loop: resume=True continues a run and force=True discards it; "
                          "give one of them")
    cbs = list(callbacks)
    for cb in cbs:
        if not all(callable(getattr(cb, m, None)) for m in ("on_run_start", "on_generation",
                                                             "on_run_end")):
            raise ConfigError(f"run_loop: callbacks must be stabfw.run.callbacks.RunCallback "
                              f"instances, got {type(cb).__name__}")
    return cbs


def _seed_array(cfg: RetrainConfig) -> np.ndarray:
    if isinstance(cfg.seeds, int):
        return np.arange(cfg.seeds, dtype=np.int64)
    return np.asarray(cfg.seeds, dtype=np.int64)


# --- what a generation produced ----------------------------------------------------------
def _where(loop: Any, method: str, seed: int | None, t: int) -> str:
    at = f"seed {seed}, generation {t}" if seed is not None else f"generation {t} (all seeds)"
    return f"{type(loop).__name__}.{method} at {at}"


def _call(loop: Any, method: str, seed: int | None, t: int, fn: Callable[..., Any],
          *args: Any) -> Any:
    """``fn(*args)``; an exception of the loop's own code becomes a GenerationError."""
    try:
        return fn(*args)
    except (StabfwError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise GenerationError(f"{_where(loop, method, seed, t)} raised {type(err).__name__}: "
                              f"{str(err)[:500]}", seed=seed, generation=t,
                              method=method) from err


def _theta(loop: Any, raw: Any, seed: int | None, t: int, method: str = "theta") -> np.ndarray:
    if type(raw) is np.ndarray and raw.dtype == np.float64 and raw.ndim == 1 and raw.size:
        return raw  # the common case, without the checks' cost (once per seed-generation)
    why = theta_problem(raw)
    if why is not None:
        raise LoopError(f"{_where(loop, method, seed, t)} returned a θ that {why}; θ must be "
                        "a 1-D vector of real numbers", seed=seed, generation=t, method=method)
    return np.asarray(raw, dtype=float)


def _metrics(loop: Any, raw: Any, seed: int | None, t: int) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise LoopError(f"{_where(loop, 'metrics', seed, t)} returned a "
                        f"{type(raw).__name__}; it must return a dict of numbers",
                        seed=seed, generation=t, method="metrics")
    out = {}
    for k, v in raw.items():
        why = metric_problem(k, v)
        if why is not None:
            raise LoopError(f"{_where(loop, 'metrics', seed, t)}: {why}", seed=seed,
                            generation=t, method="metrics")
        out[k] = float(v)
    return out


def _lam_effective(n_real: Any, n_syn: Any) -> Any:
    n_real, n_syn = np.asarray(n_real, float), np.asarray(n_syn, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(n_real > 0, n_syn / np.where(n_real > 0, n_real, 1),
                       np.where(n_syn > 0, math.inf, math.nan))
    return np.where((n_real < 0) | (n_syn < 0), math.nan, lam)


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Row dicts as numeric column arrays, keys in order of first appearance."""
    first = rows[0].keys() if rows else {}
    if all(r.keys() == first for r in rows):  # one schema (the usual case): zip the values
        return {k: np.asarray(v) for k, v in zip(first, zip(*[r.values() for r in rows]))}
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return {k: np.asarray([r.get(k, math.nan) for r in rows]) for k in keys}


@dataclass
class _Health:
    """Which seeds are non-finite now, which stopped, and the events so far."""

    policy: str
    n: int
    bad: np.ndarray = field(init=False)
    stopped: np.ndarray = field(init=False)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        self.bad = np.zeros(self.n, dtype=bool)
        self.stopped = np.zeros(self.n, dtype=bool)

    def observe(self, t: int, seeds: np.ndarray, theta: np.ndarray,
                metrics: dict[str, np.ndarray], skip: np.ndarray) -> list[dict[str, Any]]:
        """Record generation ``t`` (seeds in ``skip`` stopped earlier); its new events."""
        bad_theta = ~np.all(np.isfinite(theta), axis=1)
        bad_metric = {k: np.isnan(np.asarray(v, float)) for k, v in metrics.items()}
        now = bad_theta.copy()
        for v in bad_metric.values():
            now |= v
        now &= ~skip
        new = []
        for i in np.flatnonzero(now & ~self.bad):
            what = (["theta"] if bad_theta[i] else []) + [f"metric {k}" for k, v in
                                                          bad_metric.items() if v[i]]
            new.append({"seed": int(seeds[i]), "generation": int(t), "what": what,
                        "action": "stopped" if self.policy == "stop" else "recorded"})
        self.bad = now | skip
        if self.policy == "stop":
            self.stopped |= now
        self.events += new
        return new

    def state(self) -> dict[str, Any]:
        return {"bad": np.flatnonzero(self.bad).tolist(),
                "stopped": np.flatnonzero(self.stopped).tolist()}

    def restore(self, blocks: list[dict[str, Any]]) -> None:
        for b in blocks:
            self.events += list(b["info"].get("events") or [])
        last = blocks[-1]["info"]
        self.bad[np.asarray(last.get("bad", []), dtype=int)] = True
        self.stopped[np.asarray(last.get("stopped", []), dtype=int)] = True


@dataclass
class _Progress:
    """Where a run is (for errors and Ctrl-C) and the blocks it has completed."""

    generations: int
    blocks: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None
    generation: int | None = None
    #: θ of every seed and generation, (seeds, generations + 1, len θ), filled as blocks
    #: complete: a block's ``thetas`` is a view of it, so the end of a run stacks nothing
    #: (which would hold every θ twice)
    params: np.ndarray | None = None

    def add(self, theta: np.ndarray, columns: dict[str, np.ndarray],
            info: dict[str, Any]) -> None:
        """Keep the next generation's block."""
        t = len(self.blocks)
        if self.params is None:
            self.params = np.empty((theta.shape[0], self.generations + 1, theta.shape[1]))
        self.params[:, t] = theta
        self.blocks.append({"thetas": self.params[:, t], "columns": columns, "info": info})

    def thetas(self) -> np.ndarray:
        """θ of the completed generations (at least one), (seeds, generations, len θ)."""
        n = len(self.blocks)
        return self.params if n == self.params.shape[1] else self.params[:, :n].copy()


# --- the runner ---------------------------------------------------------------------------
def run_loop(
    loop: SelfConsumingLoop,
    config: RetrainConfig | dict[str, Any],
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    record: dict[str, Any] | None = None,
    callbacks: Sequence[RunCallback] = (),
    force: bool = False,
    checkpoint: bool = True,
) -> Trajectory:
    """Retrain ``loop`` on its own outputs for ``config.generations`` generations.

    Parameters
    ----------
    loop : SelfConsumingLoop
        Checked first as a config's ``domain:`` would be (its parameters, then its
        :meth:`~stabfw.SelfConsumingLoop.check_params`).
    config : RetrainConfig or dict
        Validated (again) as the ``loop:`` section of a file.
    out_dir : path, optional
        Where to checkpoint each generation (``checkpoint/``, see
        :class:`stabfw.run.checkpoint.Checkpoint`) and to write the trajectory at the end,
        with ``manifest.json`` (checksums and the run's fingerprint). Without it nothing is
        written. Only one run at a time may write a directory.
    resume : bool
        Continue the unfinished run in ``out_dir`` (its checkpoint and fingerprint are
        verified first). The result equals an uninterrupted run, because every random draw
        comes from a stream named by (seed, generation, purpose). On a finished run of the
        same fingerprint it does nothing and returns that run's trajectory.
    progress : bool, optional
        Show a progress bar (default: when ``out_dir`` is given).
    record : dict, optional
        The resolved run file to store beside the results (``stabfw run`` passes it).
    callbacks : sequence of RunCallback
        Told about every generation once it is checkpointed (trackers, progress).
    force : bool
        Discard what ``out_dir`` holds (a finished run, or an unfinished one's checkpoint)
        and start again from generation 0. Without it (or ``resume``) a directory holding
        a run is refused.
    checkpoint : bool
        Write the per-generation checkpoint (needed for ``resume``).

    Returns
    -------
    Trajectory

    Raises
    ------
    ConfigError
        A bad argument, config or loop parameter; a run too big for this machine.
    RunDirError, CheckpointError
        ``out_dir`` is unusable, locked, holds another run, or holds a damaged checkpoint.
    LoopError, GenerationError
        The loop broke its contract or raised at one seed and generation (``.trajectory``:
        the generations completed before).
    RunInterrupted
        Ctrl-C; a ``KeyboardInterrupt`` with the same attributes.
    """
    callbacks = _check_arguments(loop, resume, force, progress, checkpoint, callbacks)
    cfg = as_retrain_config(config)
    validate_loop(loop)
    for name in ("curate", "correct"):
        try:
            check_hook(getattr(cfg, name), loop)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"invalid configuration:\n  loop.{name}: {err}") from None
    hint = loop.size_hint() or {}
    if hint.get("n_real") is not None:
        cfg.n_synthetic(int(hint["n_real"]))
    check_size(estimate_size(cfg.n_seeds, cfg.generations, hint.get("dim_theta")), out_dir)
    fp = fingerprint(loop, cfg)
    if out_dir is None:
        return _run(loop, cfg, fp, None, None, None, progress or False, record, callbacks)
    out = ensure_dir(out_dir)
    with RunLock(out):
        for d in (out, out / CHECKPOINT):
            for p in clean_temp_files(d):
                log.info("removed %s, left by an interrupted write", p)
        ckpt = Checkpoint(out / CHECKPOINT, fp)
        saved = _prepare(out, ckpt, fp, resume, force)
        if isinstance(saved, Trajectory):  # finished already
            return saved
        loop.set_run_dir(out)
        return _run(loop, cfg, fp, out, ckpt if checkpoint else None, saved,
                    True if progress is None else progress, record, callbacks)


def _prepare(out: Path, ckpt: Checkpoint, fp: Fingerprint, resume: bool,
             force: bool) -> Any:
    """What ``out`` holds decides: start, resume (the verified checkpoint), return the
    finished trajectory, or refuse."""
    if force:
        ckpt.clear()
        for name in _OWN_FILES:
            (out / name).unlink(missing_ok=True)
        return None
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest["fingerprint"] == fp.digest:
            if resume:
                traj = Trajectory.load(out)  # verified against the manifest
                ckpt.clear()  # a kill between the manifest and the cleanup leaves it
                traj.meta["already_finished"] = True
                log.info("%s holds this run, finished already; nothing to do", out)
                return traj
            raise RunDirError(f"{out} holds this run, finished already; nothing was changed. "
                              "Use --resume to accept it as it is (a no-op), --force to compute "
                              "it again, or another output directory (--out)", out)
        diff = "\n  ".join(fp.differences(manifest.get("record") or {}))
        raise RunDirError(f"{out} holds a finished run of another configuration:\n  {diff}\n"
                          "It was left unchanged. Use --force to replace it, or another "
                          "output directory (--out)", out)
    if ckpt.exists():
        if resume:
            saved = ckpt.load()
            log.info("resuming %s at generation %d", out, saved[1][-1]["info"]["generation"] + 1)
            return saved
        gen = ckpt.peek_generation()
        at = f" (checkpointed up to generation {gen})" if gen is not None else ""
        raise RunDirError(f"{out} holds an unfinished run{at}; nothing was changed. Continue "
                          "it with --resume (resume=True), or discard it with --restart "
                          "(force=True), or choose another output directory (--out)", out)
    leftovers = [n for n in _OWN_FILES if (out / n).exists()]
    if leftovers:
        raise RunDirError(f"{out} holds results without a manifest ({', '.join(leftovers)}: "
                          "written by an older stabfw, or not by stabfw); they cannot be "
                          "verified. Use --force to replace them, or another output directory",
                          out)
    if resume:
        log.info("nothing to resume in %s; starting from generation 0", out)
    return None


def _run(loop, cfg, fp, out, ckpt, saved, progress, record, callbacks) -> Trajectory:
    seeds = _seed_array(cfg)
    recorded = record if record is not None else {"loop": cfg.model_dump(mode="json")}

    if loop.capabilities().vectorized:
        reason = loop.supports_vectorized(cfg)
    else:
        reason = f"{type(loop).__name__} has no vectorised path"
    if cfg.vectorize == "always" and reason is not None:
        raise ConfigError(f"loop.vectorize: 'always', but {reason}; use 'auto' or 'never'")
    vectorized = cfg.vectorize != "never" and reason is None
    if loop.capabilities().vectorized and reason is not None and cfg.vectorize == "auto":
        # the per-seed path can be 50–100× slower: say why it was taken
        log.warning("%s: per-seed path, not the vectorised one, because %s",
                    type(loop).__name__, reason)

    health = _Health(cfg.on_nonfinite, len(seeds))
    if saved is not None:
        health.restore(saved[1])
    start = 1 if saved is None else int(saved[1][-1]["info"]["generation"]) + 1
    for cb in callbacks:
        cb.on_run_start(cfg, seeds, start)
    bar = _progress(cfg.generations, "retraining" + (" (vectorised)" if vectorized else ""),
                    progress)
    bar.update(max(start - 1, 0))
    where = _Progress(cfg.generations)
    for b in [] if saved is None else saved[1]:
        where.add(b["thetas"], b["columns"], b["info"])

    def done(t: int, state: dict[str, Any], theta: np.ndarray,
             columns: dict[str, np.ndarray], events: list[dict[str, Any]]) -> None:
        """Generation t is computed: checkpoint it, then tell whoever listens."""
        info = {"events": events, **health.state()}
        if ckpt is not None:
            ckpt.save(t, state, theta, columns, info)
        where.add(theta, columns, info)
        if t > 0:
            bar.update(1)
        if callbacks:
            frame = pd.DataFrame(columns)
            for cb in callbacks:
                cb.on_generation(t, theta, frame)

    t0 = time.perf_counter()
    state_rec = None if saved is None else saved[0]
    try:
        if vectorized:
            _run_vectorized(loop, cfg, seeds, state_rec, where, health, done)
        else:
            _run_per_seed(loop, cfg, seeds, state_rec, where, health, done,
                          keeps_states=ckpt is not None)
    except RunInterrupted:
        raise
    except KeyboardInterrupt as err:
        kept_in = out if ckpt is not None else None
        raise _interrupted(err, loop, cfg, fp, seeds, where, kept_in, vectorized, recorded) from err
    except RunError as err:
        _attach(err, loop, cfg, fp, seeds, where, out, ckpt is not None, recorded)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    where.seed = where.generation = None  # from here on: writing the results

    traj = _trajectory(loop, cfg, fp, seeds, where, recorded, health.events, meta={
        "path": "vectorized" if vectorized else "per_seed",
        "seconds": round(elapsed, 3),
        "resumed_from_generation": None if saved is None else start - 1,
    })
    if health.events:
        log.warning("%s", nonfinite_summary(health.events, cfg.on_nonfinite)["text"],
                    extra={"stabfw_nonfinite": True})  # the CLI prints its own line
    if out is not None:
        try:
            traj.save(out)
            write_manifest(out, fp, list(RESULT_FILES))
        except KeyboardInterrupt as err:
            raise _interrupted(err, loop, cfg, fp, seeds, where, out, vectorized, recorded) from err
        except OSError as err:
            raise RunError(f"cannot write the results in {out}: {err.strerror or err}. The "
                           "checkpoint of every generation is kept; fix the cause (free disk "
                           "space) and write them with `stabfw run … --resume`") from err
        if ckpt is not None:
            ckpt.clear()
    for cb in callbacks:
        cb.on_run_end(traj)
    return traj


def _trajectory(loop, cfg, fp, seeds, where, recorded, events, meta) -> Trajectory:
    """The trajectory of the completed blocks (seed-major rows, like a finished run)."""
    S, blocks = len(seeds), where.blocks
    names: dict[str, None] = {}
    for b in blocks:
        names.update(dict.fromkeys(b["columns"]))
    # generation-major blocks -> seed-major rows, seeds in the config's order: one copy per
    # column, handed to pandas as it is (10⁴ seeds × 100 generations: 0.39 → 0.04 s)
    columns = {k: np.stack([b["columns"][k] if k in b["columns"] else np.full(S, math.nan)
                            for b in blocks], axis=1).ravel() for k in names}
    metrics = pd.DataFrame(columns, copy=False)
    return Trajectory(
        params=where.thetas() if blocks else np.empty((S, 0, 0)), metrics=metrics,
        seeds=seeds, config=recorded, environment=environment(),
        meta={**meta, "domain": repr(loop), "fingerprint": fp.digest,
              # what each metric measures, so a saved run's verdict can tell collapse
              "metric_info": {k: v.to_dict() for k, v in (loop.metric_info() or {}).items()},
              "on_nonfinite": cfg.on_nonfinite, "events": list(events)})


def _partial(loop, cfg, fp, seeds, where, recorded) -> Trajectory | None:
    if not where.blocks:
        return None
    events = [e for b in where.blocks for e in (b["info"].get("events") or [])]
    return _trajectory(loop, cfg, fp, seeds, where, recorded, events,
                       meta={"partial": True, "generations_completed": len(where.blocks) - 1})


def _kept(where: _Progress, out: Path | None, checkpointed: bool) -> str:
    if not where.blocks:
        return "no generation was completed"
    last = len(where.blocks) - 1
    if out is not None and checkpointed:
        return (f"generations 0–{last} of every seed are kept, checkpointed in {out}: fix the "
                "cause and continue with --resume (in Python: the exception's .trajectory)")
    return f"generations 0–{last} of every seed are kept (the exception's .trajectory)"


def _attach(err: RunError, loop, cfg, fp, seeds, where, out, checkpointed, recorded) -> None:
    err.trajectory = _partial(loop, cfg, fp, seeds, where, recorded)
    err.checkpoint = out if checkpointed and where.blocks else None
    err.args = (f"{err.args[0]}; {_kept(where, out, checkpointed)}",)


def _interrupted(err, loop, cfg, fp, seeds, where, out, vectorized, recorded) -> RunInterrupted:
    t = where.generation
    if t is None:
        at = "while writing the results"
    elif vectorized or where.seed is None:
        at = f"at generation {t} (all {len(seeds)} seeds at once)"
    else:
        at = f"at generation {t} of seed {where.seed}"
    done = len(where.blocks) - 1
    kept = (f"; generations 0–{done} are checkpointed in {out}" if out is not None and done >= 0
            else "")
    new = RunInterrupted(f"interrupted {at}{kept}", seed=where.seed, generation=t)
    new.trajectory = _partial(loop, cfg, fp, seeds, where, recorded)
    new.checkpoint = out
    return new


#: What a seed's generation gives the run: ``(state, pool, θ, n_real, n_synthetic, metrics)``
#: (the columns of the run's table are built from them once per generation, in _record).
_Result = tuple[Any, Any, np.ndarray, int, int, dict[str, float]]


class _SeedWork:
    """The per-seed work of a run — generation 0 and later generations of one seed — in
    this process or in a worker; the same code either way, so workers change nothing."""

    def __init__(self, loop: Any, cfg: RetrainConfig, where: _Progress | None = None):
        self.loop, self.cfg, self.where = loop, cfg, where
        self.step = GenerationStep(loop, cfg)
        # a loop without metrics gets no "metrics" stream: building one per seed-generation
        # is a measurable share of a cheap loop's overhead
        self.has_metrics = type(loop).metrics is not SelfConsumingLoop.metrics
        self.reals: dict[int, tuple[Any, int]] = {}  # seed -> (fixed real data, its size)
        self.fresh = cfg.policy == "fresh_real"

    def _at(self, s: int, t: int) -> None:
        if self.where is not None:
            self.where.seed, self.where.generation = s, t

    def real(self, s: int, t: int) -> Any:
        self._at(s, t)
        return _call(self.loop, "real_data", s, t, self.step.real_data, s, t)

    def fixed(self, s: int) -> tuple[Any, int]:
        """The seed's real data of generation 0 and its size (λ is relative to it)."""
        if s not in self.reals:
            real = self.real(s, 0)
            self.reals[s] = real, _call(self.loop, "data_size", s, 0, self.loop.data_size, real)
        return self.reals[s]

    def metrics(self, s: int, t: int, state: Any) -> dict[str, float]:
        if not self.has_metrics:
            return {}
        return _metrics(self.loop, _call(self.loop, "metrics", s, t, self.loop.metrics, state,
                                         stream(s, t, "metrics")), s, t)

    def initial(self, s: int) -> _Result:
        """Generation 0 of seed ``s`` (its pool is None: there is none yet)."""
        loop = self.loop
        real, n0 = self.fixed(s)
        self._at(s, 0)
        state = _call(loop, "fit", s, 0, self.step.initial, s, real)
        theta = _theta(loop, _call(loop, "theta", s, 0, loop.theta, state), s, 0)
        return state, None, theta, n0, 0, self.metrics(s, 0, state)

    def advance(self, s: int, t: int, state: Any, pool: Any, theta_star: np.ndarray) -> _Result:
        """Generation ``t`` of seed ``s`` from its state of ``t − 1``."""
        loop, step = self.loop, self.step
        real, n0 = self.reals.get(s) or self.fixed(s)
        if self.fresh:
            real = self.real(s, t)
        self._at(s, t)
        method = None  # the step's stage, then θ: where an exception came from
        try:
            res = step(s, t, state, real, pool, n0)
            method = "theta"
            theta = loop.theta(res.state)
        except (StabfwError, KeyboardInterrupt):
            raise
        except Exception as err:
            method = method or step.stage or "step"
            raise GenerationError(f"{_where(loop, method, s, t)} raised "
                                  f"{type(err).__name__}: {str(err)[:500]}", seed=s,
                                  generation=t, method=method) from err
        theta = _theta(loop, theta, s, t)
        if theta.shape != theta_star.shape:
            raise LoopError(f"{_where(loop, 'theta', s, t)}: θ changed length from "
                            f"{theta_star.size} (generation 0) to {theta.size}; θ must "
                            "keep one length for the whole run", seed=s, generation=t,
                            method="theta")
        return (res.state, res.pool, theta, res.n_real, res.n_synthetic,
                self.metrics(s, t, res.state) if self.has_metrics else {})


def _dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for a worker; by value (cloudpickle) where it can, so that a loop
    class defined in a script's ``__main__`` or a notebook reaches the workers too."""
    try:
        import cloudpickle  # installed with joblib's loky and with Ray
    except ImportError:  # pragma: no cover
        return pickle.dumps(obj)
    return cloudpickle.dumps(obj)


class _Packed:
    """A seed's state or pool as the worker that made it pickled it. The driver keeps and
    checkpoints the bytes without unpickling them: pickling 4 ETS states in the driver and
    unpickling them again cost ~25 ms per task there, serially, against ~120 ms of work."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


def _unpacked(obj: Any) -> Any:
    return pickle.loads(obj.data) if isinstance(obj, _Packed) else obj


#: The per-seed work of the runs this worker process has served, by loop identity.
_WORKER_RUNS: dict[bytes, _SeedWork] = {}
#: (run, seed) -> (generation, state, pool) this worker made last, the latest first: the next
#: generation of that seed, when it lands here again, starts from the object instead of
#: unpickling its bytes. A few chunks' worth is kept (states can be large models).
_RESIDENT: dict[tuple[str, int], tuple[int, Any, Any]] = {}


def _pack(obj: Any, s: int, t: int, what: str) -> _Packed | None:
    if obj is None:
        return None
    try:
        # plain pickle is ~2× faster; it refuses what it cannot name (a class the driver's
        # __main__ sent by value, a lambda), which cloudpickle then sends by value
        return _Packed(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        pass
    try:
        return _Packed(_dumps(obj))
    except Exception as err:  # a lock, an open file in a fitted state
        raise LoopError(f"the {what} of seed {s} at generation {t} cannot be pickled "
                        f"({type(err).__name__}: {err}); loop.workers > 1 sends it between "
                        "processes. Make it picklable, or run with loop.workers: 1",
                        seed=s, generation=t, method="pickle") from None


def _packed(res: tuple[Any, ...], s: int, t: int) -> tuple[Any, ...]:
    """A seed's :data:`_Result` with its state and pool packed."""
    return (_pack(res[0], s, t, "state"), _pack(res[1], s, t, "pool"), *res[2:])


def _seed_task(task: dict[str, Any]) -> tuple[list[tuple[int, list[tuple[int, Any]]]], float]:
    """A worker's share of generations ``generation … last`` (module-level: it pickles by
    reference): ``([(t, [(position in task["seeds"], result), ...]), ...], seconds
    computing)``, each result a :data:`_Result`.

    The loop is rebuilt once per worker from its class and constructor parameters (as
    ``sklearn.base.clone`` would), so its lazily built state is not shipped each generation.
    Which worker gets which task is up to the backend, so the states always come along as
    bytes; the worker that made them uses its own objects instead.

    A seed whose generation is not finite goes no further in the task (it waits for the
    run's verdict). Each seed's last state and pool in the task are returned packed, the
    ones before it only when ``task["pack_each"]`` (a checkpoint keeps every generation's):
    pickling 4 ETS states was ~6 % of a task's work. If a generation after the first fails,
    the task ends with the generations before it; the next task, which starts there, then
    raises it the ordinary way (through the backend, with the worker's traceback).
    """
    t0 = time.perf_counter()
    key, run, start, last = task["key"], task["run"], task["generation"], task["last"]
    work = _WORKER_RUNS.get(key)
    if work is None:
        cls, params, cfg = pickle.loads(key)
        _WORKER_RUNS.clear()  # one run at a time per worker
        work = _WORKER_RUNS[key] = _SeedWork(cls(**params), cfg)
    seeds, stars, pack_each = task["seeds"], list(task["theta_star"]), task["pack_each"]
    now = dict(enumerate(zip(task["states"], task["pools"])))  # live position -> (state, pool)
    out: list[tuple[int, list[tuple[int, Any]]]] = []
    last_at: dict[int, tuple[int, int]] = {}  # position -> where its latest result is in out
    for t in range(start, last + 1):
        done = []
        try:
            for pos, (state, pool) in now.items():
                s = seeds[pos]
                if t == 0:
                    res = work.initial(s)
                else:
                    kept = _RESIDENT.pop((run, s), None)
                    if kept is not None and kept[0] == t - 1:
                        state, pool = kept[1], kept[2]
                    else:
                        state, pool = _unpacked(state), _unpacked(pool)
                    res = work.advance(s, t, state, pool, stars[pos])
                _RESIDENT[run, s] = (t, res[0], res[1])
                done.append((pos, res))
        except Exception:
            if t == start:
                raise
            # the seeds it advanced before the failure are resident at t, so the next task
            # starts them from the bytes of t − 1 returned here
            break
        rows: list[tuple[int, Any]] = []
        out.append((t, rows))
        for pos, res in done:
            if t == 0:
                stars[pos] = res[2]
            if pos in last_at and not pack_each:  # a seed's earlier states stay here
                k, j = last_at[pos]
                out[k][1][j] = (pos, (None, None, *out[k][1][j][1][2:]))
            last_at[pos] = (len(out) - 1, len(rows))
            rows.append((pos, _packed(res, seeds[pos], t) if pack_each else res))
            now[pos] = (None, None)  # resident from here on
            if not _goes_on(res):
                del now[pos]
        if not now:
            break
    if not pack_each:
        for pos, (k, j) in last_at.items():
            out[k][1][j] = (pos, _packed(out[k][1][j][1], seeds[pos], out[k][0]))
    for k in [k for k in _RESIDENT if k[0] != run] + list(_RESIDENT)[:-4 * len(seeds)]:
        _RESIDENT.pop(k, None)
    return out, time.perf_counter() - t0


def _goes_on(res: _Result) -> bool:
    """Whether a seed's generation is finite (θ and metrics), so that it cannot be stopped
    by it and its next generation may start before the other seeds are back."""
    return bool(np.all(np.isfinite(res[2]))) and not any(math.isnan(v) for v in res[5].values())


def _in_process(work: _SeedWork, ids: list[int], start: int, last: int, states: list[Any],
                pools: list[Any], stars: list[Any], stopped: np.ndarray):
    """Generations ``start…last`` of the seeds, one after the other in this process: yields
    ``(t, {seed index: its _Result})``, skipping the seeds ``stopped`` then."""
    # only a checkpoint of a run on workers holds packed states; from here on they are objects
    states, pools = [_unpacked(x) for x in states], [_unpacked(x) for x in pools]
    stars = list(stars)
    for t in range(start, last + 1):
        res = {}
        for i, (s, stop) in enumerate(zip(ids, stopped.tolist())):  # (stopped: between yields)
            if stop:
                continue
            if t == 0:
                r = res[i] = work.initial(s)
                stars[i] = r[2]
            else:
                r = res[i] = work.advance(s, t, states[i], pools[i], stars[i])
            states[i], pools[i] = r[0], r[1]
        yield t, res


class _Pipeline:
    """Generations of the seeds on a backend's workers, without a barrier between them.

    The seeds are split into one chunk per worker; a chunk's next generations are submitted
    as soon as its last ones are back, so no worker waits for the slowest chunk (seeds
    differ in cost) and the states stay in the worker that made them. Once the cost of a
    seed-generation is known, a task runs as many generations as fill
    :attr:`TASK_SECONDS` (8 ETS seeds on 2 workers: 1.59× serial with a task per
    generation, 1.84–1.91× so). Generations are still yielded whole and in order, as
    :func:`_in_process` does. A seed whose generation is not finite waits for the run's
    verdict on it (stopped or recorded); a result for a seed that turns out stopped is
    dropped, so the numbers are the serial ones.
    """

    #: seconds of work a task is given once the cost of a seed-generation is known: each
    #: task costs a round trip (~3–5 ms on 2 busy cores) in which its worker waits
    TASK_SECONDS = 0.25

    def __init__(self, backend: Any, work: _SeedWork, cfg: RetrainConfig, ids: list[int],
                 pack_each: bool = True):
        loop = work.loop
        self.backend, self.work, self.cfg, self.ids = backend, work, cfg, ids
        self.pack_each = pack_each  # whether every generation's states are kept (checkpoint)
        self.key = _dumps((type(loop), loop.get_params(deep=False), cfg))
        self.run = uuid.uuid4().hex  # the workers' resident states belong to this run
        self.per_seed_gen: float | None = None  # seconds, from the tasks back so far

    def __call__(self, start: int, last: int, states: list[Any], pools: list[Any],
                 stars: list[Any], stopped: np.ndarray):
        ids, S, where = self.ids, len(self.ids), self.work.where
        latest = list(zip(states, pools))  # each seed's newest (state, pool), packed
        stars = list(stars)
        got: dict[int, dict[int, Any]] = {}  # generation -> seed index -> result
        failed: dict[int, list[tuple[list[int], BaseException]]] = {}
        held: dict[int, list[int]] = {}  # generation -> seeds waiting for its verdict
        pending: dict[Any, tuple[int, list[int]]] = {}

        def submit(t: int, idx: list[int]) -> None:
            idx = [i for i in idx if not stopped[i]]
            if idx:
                per = self.per_seed_gen
                n = 1 if per is None else max(1, int(self.TASK_SECONDS / (per * len(idx))))
                task = {"key": self.key, "run": self.run, "generation": t,
                        "last": min(last, t + n - 1), "pack_each": self.pack_each,
                        "seeds": [ids[i] for i in idx],
                        "states": [latest[i][0] for i in idx],
                        "pools": [latest[i][1] for i in idx],
                        "theta_star": [stars[i] for i in idx]}
                pending[self.backend.submit(_seed_task, task)] = (t, idx)

        def keep(t: int, i: int, r: Any) -> None:
            got.setdefault(t, {})[i] = r
            latest[i] = r[0], r[1]
            if t == 0:
                stars[i] = r[2]

        def arrived(f: Any) -> None:
            """A chunk's generations are back: keep them, and start the next ones of the
            seeds they cannot stop."""
            t, idx = pending.pop(f)
            try:
                out, seconds = f.result()
            except Exception as err:
                failed.setdefault(t, []).append((idx, err))
                return
            final: dict[int, tuple[int, Any]] = {}  # seed index -> its last generation here
            for g, rows in out:
                for pos, r in rows:
                    i = idx[pos]
                    if not stopped[i]:
                        keep(g, i, r)
                        final[i] = g, r
            self.per_seed_gen = seconds / max(1, sum(len(rows) for _, rows in out))
            go = []
            for i, (g, r) in final.items():
                (go if _goes_on(r) else held.setdefault(g, [])).append(i)
            end = out[-1][0]
            if end < last:
                submit(end + 1, go)

        def complete(t: int) -> bool:
            have = set(got.get(t, ())).union(*(idx for idx, _ in failed.get(t, ())))
            return all(stopped[i] or i in have for i in range(S))

        W = min(self.cfg.workers, S)
        for j in range(W):
            submit(start, list(range(j, S, W)))
        t = start
        try:
            while t <= last:
                if not complete(t):
                    if not pending:  # pragma: no cover - a bug here, not the user's
                        raise RuntimeError(f"stabfw: generation {t} lost seeds in flight")
                    if where is not None:
                        where.seed, where.generation = None, t
                    for f in wait(list(pending), return_when=FIRST_COMPLETED)[0]:
                        arrived(f)
                    continue
                for idx, err in failed.pop(t, []):
                    self._again(err, t, [i for i in idx if not stopped[i]], keep, latest, stars)
                    held.setdefault(t, []).extend(i for i in idx if not stopped[i])
                yield t, {i: r for i, r in got.pop(t, {}).items() if not stopped[i]}
                # the caller has recorded generation t: `stopped` holds its verdict
                if t < last:
                    submit(t + 1, held.pop(t, []))
                t += 1
        finally:
            self.backend.cancel(list(pending))

    def _again(self, err: BaseException, t: int, idx: list[int], keep, latest, stars) -> None:
        """A chunk failed at generation ``t``: the error is the run's unless it came from a
        seed that its previous generation has stopped since, which serially would not have
        run; then the chunk's other seeds are computed here."""
        bad = getattr(err, "seed", None)
        if bad is None or bad not in self.ids or self.ids.index(bad) in idx:
            raise err
        for i in idx:
            s = self.ids[i]
            keep(t, i, self.work.initial(s) if t == 0 else
                 self.work.advance(s, t, _unpacked(latest[i][0]), _unpacked(latest[i][1]),
                                   stars[i]))


def _run_per_seed(loop, cfg, seeds, state_rec, where, health, done, keeps_states=True):
    """The seeds one by one, or on a backend's workers (``keeps_states``: whether ``done``
    checkpoints every generation's states, so that the workers must send them all)."""
    work = _SeedWork(loop, cfg, where)
    S = len(seeds)
    ids = [int(s) for s in seeds]
    backend = make_backend(cfg.backend, cfg.workers, cfg.address) if cfg.workers > 1 else None
    if state_rec is None:
        start, states, pools, stars = 0, [None] * S, [None] * S, [None] * S
    else:
        states, pools = list(state_rec["states"]), list(state_rec["pools"])
        start, stars = state_rec["generation"] + 1, list(where.blocks[0]["thetas"])
    if backend is None or backend.name == "serial" or S < 2:
        generations = _in_process(work, ids, start, cfg.generations, states, pools, stars,
                                  health.stopped)
    else:
        generations = _Pipeline(backend, work, cfg, ids, keeps_states)(
            start, cfg.generations, states, pools, stars, health.stopped)
    with contextlib.closing(generations):  # a failure here stops the workers' tasks too
        for t, res in generations:
            _record(loop, t, res, ids, seeds, states, pools, where, health, done)


def _record(loop, t, res, ids, seeds, states, pools, where, health, done) -> None:
    """Generation ``t`` of every seed (``res``: by seed index, the seeds not stopped):
    its θ and columns, the health verdict, the checkpoint."""
    skip = health.stopped.copy()
    keys = ([k for k in where.blocks[-1]["columns"] if k not in RESERVED_COLUMNS]
            if where.blocks else [])
    thetas, n_real, n_syn, metrics = [], [], [], []
    for i in range(len(ids)):
        if i not in res:  # stopped at a non-finite value: NaN from here on, nothing computed
            thetas.append(np.full(len(where.blocks[0]["thetas"][0]), math.nan))
            n_real.append(math.nan)
            n_syn.append(math.nan)
            metrics.append(dict.fromkeys(keys, math.nan))
            continue
        states[i], pools[i], theta, nr, ns, m = res[i]
        thetas.append(theta)
        n_real.append(nr)
        n_syn.append(ns)
        metrics.append(m)
    theta = _stack(loop, thetas, 0) if t == 0 else np.stack(thetas)
    n_real, n_syn = np.asarray(n_real), np.asarray(n_syn)
    domain = _columns(metrics)
    cols = {"seed": np.asarray(ids), "generation": np.full(len(ids), t), "n_real": n_real,
            "n_synthetic": n_syn,
            "dist_to_theta_star": (np.zeros(len(ids)) if t == 0 else
                                   _row_norms(theta - where.blocks[0]["thetas"])),
            "lam_effective": _lam_effective(n_real, n_syn), **domain}
    events = health.observe(t, seeds, theta, domain, skip)
    done(t, {"states": states, "pools": pools}, theta, cols, events)


def _domain_metrics(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in cols.items() if k not in RESERVED_COLUMNS}


def _stack(loop: Any, thetas: list[np.ndarray], t: int) -> np.ndarray:
    sizes = {th.size for th in thetas}
    if len(sizes) > 1:
        raise LoopError(f"{type(loop).__name__}.theta returned vectors of different lengths "
                        f"({sorted(sizes)}) for different seeds at generation {t}", generation=t,
                        method="theta")
    return np.stack(thetas)


# Seeds per thread below which splitting a vectorised batch costs more than it saves
# (Gaussian steps, 2 cores: 2 × 5000 seeds at d = 10 ran 2.0× one batch, 2 × 500 ran 0.7×).
_MIN_SEEDS_PER_THREAD = 2000


def _spans(S: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous seed ranges, one batch each, advanced by one thread each."""
    n = max(1, min(workers, S // _MIN_SEEDS_PER_THREAD))
    cuts = [S * i // n for i in range(n + 1)]
    return list(itertools.pairwise(cuts))


def _run_vectorized(loop, cfg, seeds, state_rec, where, health, done):
    """All seeds in array operations; with ``loop.workers > 1`` and enough seeds, one batch
    per contiguous range of seeds, the batches advanced by threads of this process (numpy
    releases the GIL). Seeds are independent, so the split changes no number."""
    S = len(seeds)
    theta_star: np.ndarray | None = None

    def stepped(span: tuple[int, int], batch: Any, t: int, skip: np.ndarray):
        a, z = span
        with np.errstate(all="ignore") if skip[a:z].any() else contextlib.nullcontext():
            if t == 0:
                batch = _call(loop, "init_batch", None, 0, loop.init_batch, seeds[a:z], cfg)
            else:
                batch = _call(loop, "step_batch", None, t, loop.step_batch, batch,
                              seeds[a:z], t, cfg)
            theta = _batch_theta(loop, batch, z - a, None if t == 0 else theta_star.shape[1], t)
            star = theta if t == 0 else theta_star[a:z]
            return batch, theta, _batch_columns(loop, batch, seeds[a:z], t, theta, star)

    if state_rec is None:
        spans, batches, start = _spans(S, cfg.workers), None, 0
    elif "batches" in state_rec:
        spans, batches = [tuple(sp) for sp in state_rec["spans"]], list(state_rec["batches"])
        start = state_rec["generation"] + 1
    else:
        spans, batches, start = [(0, S)], [state_rec["batch"]], state_rec["generation"] + 1
    if start > 0:
        theta_star = where.blocks[0]["thetas"]
    pool = (ThreadPoolExecutor(len(spans), thread_name_prefix="stabfw-seeds")
            if len(spans) > 1 else None)
    with pool if pool is not None else contextlib.nullcontext():
        for t in range(start, cfg.generations + 1):
            where.seed, where.generation = None, t
            skip = health.stopped.copy()
            old = batches or [None] * len(spans)
            if pool is None:
                parts = [stepped(spans[0], old[0], t, skip)]
            else:
                parts = list(pool.map(stepped, spans, old, itertools.repeat(t),
                                      itertools.repeat(skip)))
            batches = [part[0] for part in parts]
            theta, cols = _joined(loop, t, seeds, spans, parts)
            if skip.any():  # stopped seeds: NaN from here on, as on the per-seed path
                theta = theta.copy()
                theta[skip] = math.nan
                for k in cols:
                    if k not in ("seed", "generation"):
                        cols[k] = cols[k].astype(float)
                        cols[k][skip] = math.nan
            events = health.observe(t, seeds, theta, _domain_metrics(cols), skip)
            state = ({"batch": batches[0]} if len(spans) == 1 else
                     {"batches": batches, "spans": [list(sp) for sp in spans]})
            done(t, state, theta, cols, events)
            if t == 0:  # a copy: theta may be the loop's own array
                theta_star = theta.copy()


def _joined(loop, t, seeds, spans, parts) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """θ and metric columns of all seeds from the batches' ``(batch, θ, columns)``."""
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    names = parts[0][2].keys()
    odd = next((i for i, p in enumerate(parts) if p[2].keys() != names), None)
    if odd is not None:
        (a, z), (a2, z2) = spans[0], spans[odd]
        raise LoopError(f"{_where(loop, 'metrics_batch', None, t)} returned the metrics "
                        f"{sorted(names)} for seeds {seeds[a]}–{seeds[z - 1]} but "
                        f"{sorted(parts[odd][2])} for seeds {seeds[a2]}–{seeds[z2 - 1]}; every "
                        "batch of seeds must report the same metrics", generation=t,
                        method="metrics_batch")
    return (np.concatenate([p[1] for p in parts]),
            {k: np.concatenate([p[2][k] for p in parts]) for k in names})


def _batch_theta(loop: Any, batch: Any, S: int, d: int | None, t: int) -> np.ndarray:
    raw = _call(loop, "theta_batch", None, t, loop.theta_batch, batch)
    arr = np.asarray(raw)
    if arr.ndim != 2 or arr.shape[0] != S or arr.dtype.kind not in "fiu":
        raise LoopError(f"{_where(loop, 'theta_batch', None, t)} returned shape {arr.shape}, "
                        f"dtype {arr.dtype}; expected real numbers of shape ({S}, d)",
                        generation=t, method="theta_batch")
    if d is not None and arr.shape[1] != d:
        raise LoopError(f"{_where(loop, 'theta_batch', None, t)}: θ changed length from {d} "
                        f"to {arr.shape[1]}", generation=t, method="theta_batch")
    return arr.astype(float, copy=False)  # kept only as copies (_Progress.add)


def _batch_columns(loop, batch, seeds, t, theta, theta_star) -> dict[str, np.ndarray]:
    # Column arrays, not row dicts: 10^4 seeds x 10^2 generations must stay cheap.
    raw = _call(loop, "metrics_batch", None, t, loop.metrics_batch, batch)
    n = len(seeds)
    metrics = {}
    for k, v in raw.items():
        arr = np.asarray(v)
        if arr.shape != (n,) or arr.dtype.kind not in "fiub":
            raise LoopError(f"{_where(loop, 'metrics_batch', None, t)}: metric {k!r} has "
                            f"shape {arr.shape}, dtype {arr.dtype}; expected ({n},) numbers",
                            generation=t, method="metrics_batch")
        metrics[k] = arr.astype(float)
    n_real = metrics.pop("n_real", np.full(n, -1)).astype(np.int64)
    n_syn = metrics.pop("n_synthetic", np.full(n, -1)).astype(np.int64)
    for k in metrics:
        why = metric_problem(k, 0.0)
        if why is not None:
            raise LoopError(f"{_where(loop, 'metrics_batch', None, t)}: {why}", generation=t,
                            method="metrics_batch")
    cols = {
        "seed": np.asarray(seeds, dtype=np.int64),
        "generation": np.full(n, t, dtype=np.int64),
        "n_real": n_real,
        "n_synthetic": n_syn,
        "dist_to_theta_star": _row_norms(theta - theta_star),
        "lam_effective": _lam_effective(n_real, n_syn),
    }
    cols.update(metrics)
    return cols



def _row_norms(x: np.ndarray) -> np.ndarray:
    # ‖x_i‖ per row; einsum is ~3× faster than np.linalg.norm(axis=1) on (10⁴, 65)
    return np.sqrt(np.einsum("ij,ij->i", x, x))

