"""The conformance suite a domain must pass, for the built-in domains and for yours.

:func:`check_conformance` (or each ``check_*`` function alone) takes a loop built with small
parameters (its ``test_params``) and checks what every analyzer relies on:

``contract``
    :func:`~stabfw.check_loop`'s named checks of the interface;
``run``
    a short run gives θ of shape ``(seeds, generations + 1, d)`` and one metrics row per
    seed and generation;
``determinism``
    the same config and seeds give the same numbers twice;
``resume``
    a run interrupted after generation 1 and resumed from its checkpoint equals an
    uninterrupted one;
``generation_equivalence``
    the retraining map of seed s and generation t (:class:`~stabfw.RetrainingMap`, the map
    the analyzers iterate and differentiate) takes the run's θ_{t−1} to the run's θ_t
    exactly; for a loop that cannot take θ back, :func:`~stabfw.replay` of the generation
    step gives the run's θ exactly.

It lives in the run layer, not in ``core`` beside :func:`~stabfw.check_loop`, because it runs
the loop. Use it in a domain package's own tests::

    from stabfw.run.conformance import CONFORMANCE

    @pytest.mark.parametrize("name", CONFORMANCE)
    def test_my_domain(name, tmp_path):
        CONFORMANCE[name](MyLoop(**MyLoop.test_params), tmp_path=tmp_path)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stabfw.core.checks import check_loop
from stabfw.errors import LoopCheckError
from stabfw.run.callbacks import RunCallback
from stabfw.run.config import RetrainConfig
from stabfw.run.retraining_map import RetrainingMap
from stabfw.run.runner import run_loop
from stabfw.run.step import as_retrain_config, replay

__all__ = [
    "CONFORMANCE",
    "check_conformance",
    "check_contract",
    "check_determinism",
    "check_generation_equivalence",
    "check_resume",
    "check_run",
    "small_config",
]


def small_config(**changes: Any) -> RetrainConfig:
    """Two seeds, two generations, λ = 1, fixed real data, the per-seed path."""
    return RetrainConfig(**{"lam": 1.0, "generations": 2, "seeds": 2, "vectorize": "never",
                            **changes})


def _fail(loop: Any, what: str, problems: list[str]) -> None:
    if problems:
        raise LoopCheckError(loop, [f"{what}: {p}" for p in problems])


def check_contract(loop: Any, config: Any = None, tmp_path: Path | None = None) -> None:
    """Every named check of :func:`~stabfw.check_loop`."""
    check_loop(loop)


def check_run(loop: Any, config: Any = None, tmp_path: Path | None = None) -> None:
    """A short run has θ of the right shape and one metrics row per seed and generation."""
    cfg = as_retrain_config(config or small_config())
    traj = run_loop(loop, cfg, progress=False)
    S, T = len(cfg.seed_list), cfg.generations
    problems = []
    if traj.params.ndim != 3 or traj.params.shape[:2] != (S, T + 1):
        problems.append(f"θ has shape {traj.params.shape}, expected ({S}, {T + 1}, d)")
    if len(traj.metrics) != S * (T + 1):
        problems.append(f"{len(traj.metrics)} metrics rows, expected {S * (T + 1)}")
    if not np.all(np.isfinite(traj.params)):
        problems.append("θ has non-finite entries")
    _fail(loop, "run", problems)


def check_determinism(loop: Any, config: Any = None, tmp_path: Path | None = None) -> None:
    """The same config and seeds give the same numbers twice."""
    cfg = as_retrain_config(config or small_config())
    a, b = run_loop(loop, cfg, progress=False), run_loop(loop, cfg, progress=False)
    problems = []
    if not np.array_equal(a.params, b.params):
        problems.append("two runs of the same config gave different θ")
    if not a.metrics.equals(b.metrics):
        problems.append("two runs of the same config gave different metrics")
    _fail(loop, "determinism", problems)


class _Stop(Exception):
    """Raised by :class:`_StopAfter` to interrupt a run as a crash would."""


class _StopAfter(RunCallback):
    def __init__(self, generation: int):
        self.generation = generation

    def on_generation(self, generation: int, theta: np.ndarray, metrics: Any) -> None:
        if generation == self.generation:
            raise _Stop


def check_resume(loop: Any, config: Any = None, tmp_path: Path | None = None) -> None:
    """A run interrupted after generation 1 and resumed equals an uninterrupted run."""
    cfg = as_retrain_config(config or small_config())
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        whole = run_loop(loop, cfg, progress=False)
        out = Path(tmp) / "interrupted"
        try:
            run_loop(loop, cfg, out_dir=out, progress=False, callbacks=[_StopAfter(1)])
        except _Stop:
            pass
        resumed = run_loop(loop, cfg, out_dir=out, resume=True, progress=False)
    problems = []
    if resumed.meta.get("resumed_from_generation") != 1:
        problems.append("the resumed run did not start from the checkpoint of generation 1")
    if not np.array_equal(whole.params, resumed.params):
        problems.append("θ after resuming differs from an uninterrupted run")
    if not whole.metrics.equals(resumed.metrics):
        problems.append("metrics after resuming differ from an uninterrupted run")
    _fail(loop, "resume", problems)


def check_generation_equivalence(loop: Any, config: Any = None,
                                 tmp_path: Path | None = None) -> None:
    """The retraining map of (seed, generation) maps the run's θ_{t−1} to its θ_t exactly
    (the generation step's replay, for loops that cannot take θ back)."""
    cfg = as_retrain_config(config or small_config())
    traj = run_loop(loop, cfg, progress=False)
    problems = []
    for i, s in enumerate(cfg.seed_list):
        if loop.capabilities().with_theta:
            for t in range(1, cfg.generations + 1):
                got = RetrainingMap(loop, cfg, seed=s, generation=t)(traj.params[i, t - 1])
                if not np.array_equal(got, traj.params[i, t]):
                    err = float(np.max(np.abs(got - traj.params[i, t])))
                    problems.append(f"RetrainingMap(seed={s}, generation={t}) of the run's "
                                    f"θ_{t - 1} differs from its θ_{t} (max |Δ| {err:.3g})")
        else:
            states = replay(loop, cfg, s, cfg.generations)
            got = np.stack([np.asarray(loop.theta(r.state), float) for r in states])
            if not np.array_equal(got, traj.params[i]):
                problems.append(f"replay of seed {s} differs from the run's θ")
    _fail(loop, "generation_equivalence", problems)


#: Every conformance check, in the order :func:`check_conformance` runs them.
CONFORMANCE: dict[str, Callable[..., None]] = {
    "contract": check_contract,
    "run": check_run,
    "determinism": check_determinism,
    "resume": check_resume,
    "generation_equivalence": check_generation_equivalence,
}


def check_conformance(loop: Any, config: Any = None, tmp_path: Path | None = None) -> None:
    """Run every check of :data:`CONFORMANCE`; raise :class:`~stabfw.LoopCheckError` with
    all the problems found."""
    problems: list[str] = []
    for check in CONFORMANCE.values():
        try:
            check(loop, config, tmp_path)
        except LoopCheckError as err:
            problems += err.problems
    if problems:
        raise LoopCheckError(loop, problems)
