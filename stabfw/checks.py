"""``check_loop``: tell the author of a custom domain exactly what is wrong.

In the spirit of gymnasium's ``check_env``: run every method of the interface once or
twice on small inputs and report each broken promise with what was expected.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np

from stabfw.loop import SelfConsumingLoop
from stabfw.streams import stream

__all__ = ["LoopCheckError", "check_loop"]


class LoopCheckError(AssertionError):
    """A loop broke the :class:`~stabfw.SelfConsumingLoop` contract; ``problems`` lists how."""

    def __init__(self, loop: Any, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{type(loop).__name__} fails check_loop:\n{lines}")


def _same(a: Any, b: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if hasattr(a, "equals") and callable(a.equals):  # pandas
        return bool(a.equals(b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _theta(loop: SelfConsumingLoop, state: Any, where: str, problems: list[str]) -> np.ndarray | None:
    try:
        raw = loop.params(state)
    except Exception as err:
        problems.append(f"params(state) raised {type(err).__name__}: {err} ({where})")
        return None
    if not isinstance(raw, np.ndarray):
        problems.append(f"params(state) must return a numpy array, got {type(raw).__name__} ({where})")
        raw = np.asarray(raw)
    if raw.ndim != 1:
        problems.append(f"params(state) must be 1-D, got shape {raw.shape} ({where})")
        return None
    if raw.size == 0:
        problems.append(f"params(state) is empty ({where})")
        return None
    if not np.issubdtype(raw.dtype, np.floating):
        problems.append(f"params(state) must be a float vector, got dtype {raw.dtype} ({where})")
    theta = raw.astype(float)
    if not np.all(np.isfinite(theta)):
        problems.append(f"params(state) has non-finite entries ({where})")
    return theta


def check_loop(loop: SelfConsumingLoop, n_synthetic: int = 8, seed: int = 0) -> None:
    """Check that ``loop`` honours the :class:`~stabfw.SelfConsumingLoop` contract.

    Parameters
    ----------
    loop : SelfConsumingLoop
        The domain to check, preferably built with small parameters.
    n_synthetic : int
        How many samples to ask ``generate`` for.
    seed : int
        Seed of the streams used.

    Raises
    ------
    LoopCheckError
        With one line per problem found.
    """
    problems: list[str] = []
    if not isinstance(loop, SelfConsumingLoop):
        missing = [m for m in ("real_data", "fit", "generate", "params") if not hasattr(loop, m)]
        raise LoopCheckError(loop, [
            "must subclass stabfw.SelfConsumingLoop"
            + (f" (missing methods: {', '.join(missing)})" if missing else "")])

    def call(what: str, fn, *args):
        try:
            return fn(*args), True
        except Exception as err:
            problems.append(f"{what} raised {type(err).__name__}: {err}")
            return None, False

    real, ok = call("real_data(rng)", loop.real_data, stream(seed, -1, "real"))
    if not ok:
        raise LoopCheckError(loop, problems)
    n_real = _size(loop, real, "real_data(rng)", problems)
    if n_real == 0:
        problems.append("real_data(rng) returned an empty data set")
    again, _ = call("real_data(rng) (second call)", loop.real_data, stream(seed, -1, "real"))
    if again is not None and not _same(real, again):
        problems.append("real_data(rng) is not deterministic: two generators built from the same "
                        "seed gave different data (draw only from the rng you are given)")

    state, ok = call("fit(real, None, rng)", loop.fit, real, None, stream(seed, 0, "fit"))
    if not ok:
        raise LoopCheckError(loop, problems)
    if state is None:
        problems.append("fit(...) returned None; it must return the fitted state")
        raise LoopCheckError(loop, problems)
    theta0 = _theta(loop, state, "after fit on real data", problems)
    state_b, _ = call("fit(real, None, rng) (second call)", loop.fit, real, None,
                      stream(seed, 0, "fit"))
    if state_b is not None and theta0 is not None:
        theta_b = _theta(loop, state_b, "second fit", problems)
        if theta_b is not None and not np.array_equal(theta0, theta_b):
            problems.append("fit(data, None, rng) is not deterministic under the same rng "
                            "(seed torch/numpy from the rng you are given)")

    syn, ok = call(f"generate(state, {n_synthetic}, rng)", loop.generate, state, n_synthetic,
                   stream(seed, 1, "generate"))
    if ok:
        got = _size(loop, syn, "generate(...)", problems)
        if got is not None and got != n_synthetic:
            problems.append(f"generate(state, {n_synthetic}, rng) returned {got} samples")
        syn2, _ = call("generate (second call)", loop.generate, state, n_synthetic,
                       stream(seed, 1, "generate"))
        if syn2 is not None and not _same(syn, syn2):
            problems.append("generate(state, n, rng) is not deterministic under the same rng")
        mixed, ok = call("concat([real, synthetic])", loop.concat, [real, syn])
        if ok:
            before = theta0.copy() if theta0 is not None else None
            warm, ok = call("fit(mixed, init=state, rng) (warm start)", loop.fit, mixed, state,
                            stream(seed, 1, "fit"))
            if ok and warm is not None and theta0 is not None:
                theta1 = _theta(loop, warm, "after a warm-started fit", problems)
                if theta1 is not None and theta1.shape != theta0.shape:
                    problems.append(f"params length changed from {theta0.size} to {theta1.size} "
                                    "between generations")
                after = _theta(loop, state, "init after the warm fit", problems)
                if after is not None and not np.array_equal(before, after):
                    problems.append("fit(data, init, rng) modified init in place; copy it first")
            idx = np.arange(0, loop.data_size(mixed), 2)
            sub, ok = call("subsample(data, index)", loop.subsample, mixed, idx)
            if ok:
                got = _size(loop, sub, "subsample(...)", problems)
                if got is not None and got != idx.size:
                    problems.append(f"subsample returned {got} samples for {idx.size} indices")

    if loop.supports_with_params and theta0 is not None:
        swapped, ok = call("with_params(state, params(state))", loop.with_params, state, theta0)
        if ok:
            back = _theta(loop, swapped, "after with_params", problems)
            if back is not None and not np.allclose(back, theta0, rtol=1e-6, atol=1e-9):
                problems.append("params(with_params(state, θ)) != θ: with_params does not round-trip")

    m, ok = call("metrics(state, rng)", loop.metrics, state, stream(seed, 0, "metrics"))
    if ok:
        if not isinstance(m, dict):
            problems.append(f"metrics(state, rng) must return a dict, got {type(m).__name__}")
        else:
            for k, v in m.items():
                if not isinstance(k, str):
                    problems.append(f"metrics key {k!r} is not a string")
                try:
                    float(v)
                except (TypeError, ValueError):
                    problems.append(f"metrics[{k!r}] = {v!r} is not a number")
                if k in ("seed", "generation", "n_real", "n_synthetic", "dist_to_theta_star"):
                    problems.append(f"metrics key {k!r} is reserved for the runner")
    try:
        pickle.dumps(state)
    except Exception as err:
        problems.append(f"the fitted state cannot be pickled ({type(err).__name__}: {err}); "
                        "checkpoints need it")
    if problems:
        raise LoopCheckError(loop, problems)


def _size(loop: SelfConsumingLoop, data: Any, what: str, problems: list[str]) -> int | None:
    try:
        return int(loop.data_size(data))
    except Exception as err:
        problems.append(f"cannot count the samples returned by {what} ({type(err).__name__}: "
                        f"{err}); return an array/tensor/DataFrame/list or override data_size")
        return None
