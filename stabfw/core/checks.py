"""``check_loop``: tell the author of a custom domain exactly what is wrong.

In the spirit of gymnasium's ``check_env``: a set of named checks, each calling one or two
methods of the interface on small inputs and reporting every broken promise with what was
expected. :func:`check_loop` runs all of them (or the ones named) and raises
:class:`~stabfw.errors.LoopCheckError`; :func:`loop_problems` returns the list instead.
A check whose inputs could not be built (``fit`` needs ``real_data``) is skipped, and says so.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from stabfw.core.loop import SelfConsumingLoop
from stabfw.core.streams import stream
from stabfw.errors import LoopCheckError

__all__ = ["CHECKS", "RESERVED_COLUMNS", "check_loop", "loop_problems", "metric_problem",
           "theta_problem"]

#: Columns of a run's metrics table that the runner writes itself. ``lam_effective`` is
#: the synthetic-to-real ratio of the training set each generation was fitted on
#: (``n_synthetic / n_real``, ∞ without real points): λ, unless a hook changed the batch.
RESERVED_COLUMNS = ("seed", "generation", "n_real", "n_synthetic", "dist_to_theta_star",
                    "lam_effective")


def theta_problem(raw: Any, allow_int: bool = True) -> str | None:
    """Why ``raw`` (what ``theta(state)`` returned) is not a usable θ, or None.

    θ must be a non-empty 1-D vector of real numbers (floats; integers too unless
    ``allow_int`` is false). Non-finite entries are not a problem of the *type*: the runner
    treats them as an event (``loop.on_nonfinite``). Used by :func:`check_loop` and the runner.
    """
    try:
        arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
    except (ValueError, TypeError) as err:
        return f"is not an array ({type(raw).__name__}: {err})"
    if arr.ndim != 1:
        return f"must be 1-D, got shape {arr.shape}"
    if arr.size == 0:
        return "is empty"
    kinds = "fiu" if allow_int else "f"
    if arr.dtype.kind not in kinds:
        why = {"c": "; complex θ is not supported: return the real and imaginary parts as "
                    "separate entries",
               "U": " (strings are not parsed)", "S": " (strings are not parsed)",
               "O": " (Python objects)", "b": " (booleans)"}.get(arr.dtype.kind, "")
        return f"must be a float vector, got dtype {arr.dtype}{why}"
    return None


def metric_problem(key: Any, value: Any) -> str | None:
    """Why ``metrics()[key] = value`` cannot go in a run's metrics table, or None."""
    if not isinstance(key, str):
        return f"metrics key {key!r} is not a string"
    if key in RESERVED_COLUMNS:
        return (f"metrics key {key!r} is reserved for the runner (reserved: "
                f"{', '.join(RESERVED_COLUMNS)}); rename it")
    if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
        return f"metrics[{key!r}] = {value!r:.80} is not a number"
    if isinstance(value, (complex, np.complexfloating)):
        return f"metrics[{key!r}] = {value!r} is complex, not a real number"
    return None


class _Skip(Exception):
    """An input a check needs could not be built (another check reports why)."""


def same(a: Any, b: Any) -> bool:
    """Equality of data containers (numpy, torch, pandas, nested lists and dicts)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if hasattr(a, "equals") and callable(a.equals):  # pandas
        return bool(a.equals(b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # objects without a usable ==
        return False


class _Probe:
    """The inputs the checks share, each built once on first use."""

    def __init__(self, loop: SelfConsumingLoop, n_synthetic: int, seed: int):
        self.loop, self.n_synthetic, self.seed = loop, n_synthetic, seed
        self.problems: list[str] = []
        self._cache: dict[str, Any] = {}

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or a problem and :class:`_Skip` when it raises."""
        try:
            return fn(*args)
        except Exception as err:
            self.problem(f"{what} raised {type(err).__name__}: {err}")
            raise _Skip from None

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = (True, build())
            except _Skip:
                self._cache[key] = (False, None)
        ok, value = self._cache[key]
        if not ok:
            raise _Skip
        return value

    # shared inputs; a failure is reported once, by the check that owns the method
    def real(self) -> Any:
        return self.cached("real", lambda: self.call(
            "real_data(rng)", self.loop.real_data, stream(self.seed, -1, "real")))

    def state(self) -> Any:
        def build():
            st = self.call("fit(real, None, rng)", self.loop.fit, self.real(), None,
                           stream(self.seed, 0, "fit"))
            if st is None:
                self.problem("fit(...) returned None; it must return the fitted state")
                raise _Skip
            return st
        return self.cached("state", build)

    def theta(self, state: Any, where: str) -> np.ndarray:
        try:
            raw = self.loop.theta(state)
        except Exception as err:
            self.problem(f"theta(state) raised {type(err).__name__}: {err} ({where})")
            raise _Skip from None
        if not isinstance(raw, np.ndarray):
            self.problem(f"theta(state) must return a numpy array, got {type(raw).__name__} "
                         f"({where})")
        why = theta_problem(raw, allow_int=False)
        if why is not None:
            self.problem(f"theta(state) {why} ({where})")
            raise _Skip
        theta = np.asarray(raw).astype(float)
        if not np.all(np.isfinite(theta)):
            self.problem(f"theta(state) has non-finite entries ({where})")
            raise _Skip
        return theta

    def theta0(self) -> np.ndarray:
        return self.cached("theta0", lambda: self.theta(self.state(), "after fit on real data"))

    def synthetic(self) -> Any:
        return self.cached("synthetic", lambda: self.call(
            f"generate(state, {self.n_synthetic}, rng)", self.loop.generate, self.state(),
            self.n_synthetic, stream(self.seed, 1, "generate")))

    def size(self, data: Any, what: str) -> int:
        try:
            return int(self.loop.data_size(data))
        except Exception as err:
            self.problem(f"cannot count the samples returned by {what} ({type(err).__name__}: "
                         f"{err}); return an array/tensor/DataFrame/list or override data_size")
            raise _Skip from None


# --- the checks ------------------------------------------------------------------------
def _check_interface(p: _Probe) -> None:
    """The loop subclasses :class:`~stabfw.SelfConsumingLoop` (checked before the others)."""


def _check_real_data(p: _Probe) -> None:
    """``real_data`` returns a non-empty data set, the same one for the same stream."""
    real = p.real()
    if p.size(real, "real_data(rng)") == 0:
        p.problem("real_data(rng) returned an empty data set")
    again = p.call("real_data(rng) (second call)", p.loop.real_data, stream(p.seed, -1, "real"))
    if not same(real, again):
        p.problem("real_data(rng) is not deterministic: two generators built from the same "
                  "seed gave different data (draw only from the rng you are given)")


def _check_fit(p: _Probe) -> None:
    """``fit`` returns a state whose θ is a finite 1-D float vector, the same each time."""
    theta0 = p.theta0()
    other = p.call("fit(real, None, rng) (second call)", p.loop.fit, p.real(), None,
                   stream(p.seed, 0, "fit"))
    theta_b = p.theta(other, "second fit")
    if not np.array_equal(theta0, theta_b):
        p.problem("fit(data, None, rng) is not deterministic under the same rng "
                  "(seed torch/numpy from the rng you are given)")


def _check_generate(p: _Probe) -> None:
    """``generate(state, n, rng)`` returns exactly n samples, the same for the same rng."""
    syn = p.synthetic()
    got = p.size(syn, "generate(...)")
    if got != p.n_synthetic:
        p.problem(f"generate(state, {p.n_synthetic}, rng) returned {got} samples")
    again = p.call("generate (second call)", p.loop.generate, p.state(), p.n_synthetic,
                   stream(p.seed, 1, "generate"))
    if not same(syn, again):
        p.problem("generate(state, n, rng) is not deterministic under the same rng")


def _check_warm_start(p: _Probe) -> None:
    """A warm-started fit on real + synthetic data leaves ``init`` alone and keeps θ's length."""
    theta0 = p.theta0()
    mixed = p.call("concat([real, synthetic])", p.loop.concat, [p.real(), p.synthetic()])
    warm = p.call("fit(mixed, init=state, rng) (warm start)", p.loop.fit, mixed, p.state(),
                  stream(p.seed, 1, "fit"))
    theta1 = p.theta(warm, "after a warm-started fit")
    if theta1.shape != theta0.shape:
        p.problem(f"theta length changed from {theta0.size} to {theta1.size} between "
                  "generations")
    after = p.theta(p.state(), "init after the warm fit")
    if not np.array_equal(theta0, after):
        p.problem("fit(data, init, rng) modified init in place; copy it first")


def _check_subsample(p: _Probe) -> None:
    """``subsample(data, index)`` returns one sample per index."""
    mixed = p.call("concat([real, synthetic])", p.loop.concat, [p.real(), p.synthetic()])
    idx = np.arange(0, p.size(mixed, "concat(...)"), 2)
    sub = p.call("subsample(data, index)", p.loop.subsample, mixed, idx)
    got = p.size(sub, "subsample(...)")
    if got != idx.size:
        p.problem(f"subsample returned {got} samples for {idx.size} indices")


def _check_with_theta(p: _Probe) -> None:
    """``with_theta(state, theta(state))`` round-trips (when the loop declares it)."""
    if not p.loop.capabilities().with_theta:
        return
    theta0 = p.theta0()
    swapped = p.call("with_theta(state, theta(state))", p.loop.with_theta, p.state(), theta0)
    back = p.theta(swapped, "after with_theta")
    if not np.allclose(back, theta0, rtol=1e-6, atol=1e-9):
        p.problem("theta(with_theta(state, θ)) != θ: with_theta does not round-trip")


def _check_metrics(p: _Probe) -> None:
    """``metrics(state, rng)`` is a dict of numbers whose keys the runner does not reserve."""
    m = p.call("metrics(state, rng)", p.loop.metrics, p.state(), stream(p.seed, 0, "metrics"))
    if not isinstance(m, dict):
        p.problem(f"metrics(state, rng) must return a dict, got {type(m).__name__}")
        return
    for k, v in m.items():
        why = metric_problem(k, v)
        if why is not None:
            p.problem(why)


def _check_pickle(p: _Probe) -> None:
    """The fitted state pickles (checkpoints and worker processes need it)."""
    try:
        pickle.dumps(p.state())
    except _Skip:
        raise
    except Exception as err:
        p.problem(f"the fitted state cannot be pickled ({type(err).__name__}: {err}); "
                  "checkpoints need it")


#: Every named check, in the order :func:`check_loop` runs them.
CHECKS: dict[str, Callable[[_Probe], None]] = {
    "interface": _check_interface,
    "real_data": _check_real_data,
    "fit": _check_fit,
    "generate": _check_generate,
    "warm_start": _check_warm_start,
    "subsample": _check_subsample,
    "with_theta": _check_with_theta,
    "metrics": _check_metrics,
    "pickle": _check_pickle,
}


def loop_problems(loop: Any, n_synthetic: int = 8, seed: int = 0,
                  checks: Iterable[str] | None = None) -> list[str]:
    """Every problem the named checks (default: all of :data:`CHECKS`) find in ``loop``."""
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; available: {', '.join(CHECKS)}")
    if not isinstance(loop, SelfConsumingLoop):
        missing = [m for m in ("real_data", "fit", "generate") if not hasattr(loop, m)]
        if not (hasattr(loop, "theta") or hasattr(loop, "params")):
            missing.append("theta")
        return ["must subclass stabfw.SelfConsumingLoop"
                + (f" (missing methods: {', '.join(missing)})" if missing else "")]
    probe = _Probe(loop, n_synthetic, seed)
    for name in names:
        try:
            CHECKS[name](probe)
        except _Skip:
            continue
    return probe.problems


def check_loop(loop: Any, n_synthetic: int = 8, seed: int = 0,
               checks: Iterable[str] | None = None) -> None:
    """Check that ``loop`` honours the :class:`~stabfw.SelfConsumingLoop` contract.

    Parameters
    ----------
    loop : SelfConsumingLoop
        The domain to check, preferably built with small parameters.
    n_synthetic : int
        How many samples to ask ``generate`` for.
    seed : int
        Seed of the streams used.
    checks : iterable of str, optional
        Names from :data:`CHECKS` to run alone (default: all).

    Raises
    ------
    LoopCheckError
        With one line per problem found.
    """
    problems = loop_problems(loop, n_synthetic, seed, checks)
    if problems:
        raise LoopCheckError(loop, problems)
