"""Hooks on each synthetic batch before it is mixed: ``curate`` and ``correct``.

A hook is a callable ``hook(batch, *, state, loop, rng, real) -> batch``: ``state`` is
the generation that produced ``batch``, ``real`` the real data of this generation (or
``None`` in a fully synthetic loop). ``curate`` filters or selects (reward filtering,
self-selection); ``correct`` moves samples toward the data (self-correcting loops).

Configs name hooks as a string or ``{name: ..., **kwargs}``; :func:`register_hook` adds
a named factory (domains register theirs when imported). Built in:

* ``top_fraction`` (curate): keep the best-scored share of each batch (self-selection);
* ``self_correct`` (correct): the idealised self-correction of Gillman et al. (2024): a
  share γ/(1+γ) of each synthetic batch replaced by samples of the real distribution (or
  passed through a user's corrector). With ``fixed_real`` at ratio λ it acts as ratio
  λ_eff = λ/(1+γ+λγ) of model samples;
* ``sampling_bias`` (curate): quality over diversity as in Alemohammad et al. (2024):
  the batch resampled from p^(1/τ) (temperature τ < 1 sharpens) by importance weights on
  the domain's log-density ``score``, or cut to its most typical share (``truncation``).

References
----------
Gillman et al., "Self-Correcting Self-Consuming Loops for Generative Model Training",
ICML 2024. Alemohammad et al., "Self-Consuming Generative Models Go MAD", ICLR 2024.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["HOOK_SIGNATURE", "Hook", "check_hook", "register_hook", "registered_hooks",
           "resolve_hook", "sampling_bias", "self_correct", "top_fraction"]

#: How the generation step calls a hook (shown in every signature error).
HOOK_SIGNATURE = "hook(batch, *, state, loop, rng, real) -> batch"

Hook = Callable[..., Any]
_FACTORIES: dict[str, Callable[..., Hook]] = {}


def register_hook(name: str) -> Callable[[Callable[..., Hook]], Callable[..., Hook]]:
    """Decorator: register ``factory(**kwargs) -> hook`` under ``name``."""

    def deco(factory: Callable[..., Hook]) -> Callable[..., Hook]:
        _FACTORIES[name] = factory
        return factory

    return deco


def registered_hooks() -> list[str]:
    """Names a config can give as ``loop.curate`` / ``loop.correct``."""
    return sorted(_FACTORIES)


def _import_callable(path: str, what: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function (configs cannot hold callables)."""
    import importlib

    mod, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr) if attr else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what} {path!r} cannot be imported ({err}); give "
                         "'package.module:function'") from None
    if not callable(fn):
        raise ValueError(f"{what} {path!r} is not a callable; give 'package.module:function'")
    return fn


def resolve_hook(spec: Any) -> Hook | None:
    """A hook from a config value: ``None``, a callable, a name or ``{name, **kwargs}``."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    else:
        kwargs = dict(spec)
        name = kwargs.pop("name")
    if name not in _FACTORIES:
        known = ", ".join(sorted(_FACTORIES)) or "none"
        raise ValueError(f"unknown hook {name!r}; registered hooks: {known}")
    try:
        return _FACTORIES[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"hook {name!r}: {err}") from None


def check_hook(spec: Any, loop: Any) -> Hook | None:
    """Resolve ``spec`` and check, before any work, that the generation step can call it
    on ``loop``: it takes ``(batch, *, state, loop, rng, real)`` and ``loop`` has the
    capabilities the hook declares in its ``requires`` attribute (e.g. ``("score",)``).

    Raises
    ------
    ValueError or TypeError
        Naming the hook and what is wrong.
    """
    hook = resolve_hook(spec)
    if hook is None:
        return None
    name = getattr(hook, "__qualname__", repr(hook))
    try:
        inspect.signature(hook).bind(None, state=None, loop=None, rng=None, real=None)
    except TypeError as err:
        raise TypeError(f"hook {name} cannot be called as {HOOK_SIGNATURE} ({err}); "
                        "e.g. def my_hook(batch, *, state, loop, rng, real): return batch"
                        ) from None
    except ValueError:  # a builtin without a signature: cannot tell
        pass
    caps = loop.capabilities()
    missing = [c for c in getattr(hook, "requires", ()) if not getattr(caps, c, False)]
    if missing:
        raise TypeError(f"hook {name} needs the loop to implement {', '.join(missing)}; "
                        f"{type(loop).__name__} does not")
    return hook


@register_hook("top_fraction")
def top_fraction(q: float = 0.5) -> Hook:
    """Keep the fraction ``q`` of a batch with the highest ``loop.score(batch, state)``.

    The domain defines what "best" means by implementing ``score(batch, state)`` returning
    one float per sample.
    """
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")

    def hook(batch: Any, *, state: Any, loop: Any, rng: np.random.Generator, real: Any) -> Any:
        if not loop.capabilities().score:
            raise TypeError(f"{type(loop).__name__} has no score(batch, state) for top_fraction")
        scores = np.asarray(loop.score(batch, state), dtype=float)
        keep = max(1, round(q * scores.size))
        idx = np.sort(np.argsort(-scores, kind="stable")[:keep])
        return loop.subsample(batch, idx)

    hook.requires = ("score",)
    return hook


@register_hook("self_correct")
def self_correct(gamma: float = 1.0, corrector: Any = None) -> Hook:
    """Replace a share γ/(1+γ) of each synthetic batch by real-distribution samples.

    The idealised correction of Gillman et al. (2024): a corrector that maps a sample to the
    real distribution. Without ``corrector`` the replacements are fresh draws of
    ``loop.real_data`` (for a loop with a fixed data set: its points, resampled); with one,
    the chosen share is passed through ``corrector(points, *, state, loop, rng, real)``.
    Under ``fixed_real`` at ratio λ the model's samples then weigh λ_eff = λ/(1+γ+λγ), so a
    loop whose rate is λ/(1+λ) contracts at λ_eff/(1+λ_eff) = λ/((1+γ)(1+λ)).

    Parameters
    ----------
    gamma : float
        Correction strength γ ≥ 0 (0: no correction; ∞ would replace every sample).
    corrector : callable or str, optional
        A function or ``"package.module:function"``.
    """
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number ≥ 0, got {gamma!r}")
    fix = _import_callable(corrector, "corrector") if isinstance(corrector, str) else corrector
    if fix is not None and not callable(fix):
        raise ValueError(f"corrector must be a callable or 'package.module:function', "
                         f"got {corrector!r}")
    share = gamma / (1 + gamma)

    def hook(batch: Any, *, state: Any, loop: Any, rng: np.random.Generator, real: Any) -> Any:
        m = loop.data_size(batch)
        k = round(share * m)
        if k == 0:
            return batch
        idx = rng.permutation(m)
        keep, swap = np.sort(idx[k:]), np.sort(idx[:k])
        if fix is not None:
            new = fix(loop.subsample(batch, swap), state=state, loop=loop, rng=rng, real=real)
        else:
            pool = loop.real_data(rng)
            size = loop.data_size(pool)
            pick = (rng.permutation(size)[:k] if size >= k else rng.integers(0, size, k))
            new = loop.subsample(pool, pick)
        return loop.concat([loop.subsample(batch, keep), new])

    hook.gamma = gamma
    return hook


@register_hook("sampling_bias")
def sampling_bias(temperature: float | None = None, truncation: float | None = None) -> Hook:
    """Sample for quality over diversity (Alemohammad et al. 2024).

    ``temperature`` τ: the batch is resampled (with replacement, same size) with weights
    ∝ p(x)^(1/τ − 1), i.e. approximately from p^(1/τ) — for a Gaussian, N(μ, τΣ).
    ``truncation`` q ∈ (0, 1]: only the share q of the batch with the highest log-density
    is kept (the truncation trick). Both read the domain's ``score(batch, state)`` as a
    log-density up to a constant.
    """
    if (temperature is None) == (truncation is None):
        raise ValueError("give exactly one of temperature (> 0) or truncation (in (0, 1])")
    if temperature is not None and not (isinstance(temperature, (int, float))
                                        and 0 < temperature < math.inf):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if truncation is not None:
        return top_fraction(truncation)

    def hook(batch: Any, *, state: Any, loop: Any, rng: np.random.Generator, real: Any) -> Any:
        logp = np.asarray(loop.score(batch, state), dtype=float)
        w = (1.0 / temperature - 1.0) * logp
        p = np.exp(w - w.max())
        p /= p.sum()
        return loop.subsample(batch, np.sort(rng.choice(logp.size, logp.size, p=p)))

    hook.requires = ("score",)
    return hook
