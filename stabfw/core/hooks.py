"""Hooks on each synthetic batch before it is mixed: ``curate`` and ``correct``.

A hook is a callable ``hook(batch, *, state, loop, rng, real) -> batch``: ``state`` is
the generation that produced ``batch``, ``real`` the real data of this generation (or
``None`` in a fully synthetic loop). ``curate`` filters or selects (reward filtering,
self-selection); ``correct`` moves samples toward the data (self-correcting loops).

Configs name hooks as a string or ``{name: ..., **kwargs}``; :func:`register_hook` adds
a named factory (domains register theirs when imported).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Hook", "check_hook", "register_hook", "resolve_hook", "top_fraction"]

Hook = Callable[..., Any]
_FACTORIES: dict[str, Callable[..., Hook]] = {}


def register_hook(name: str) -> Callable[[Callable[..., Hook]], Callable[..., Hook]]:
    """Decorator: register ``factory(**kwargs) -> hook`` under ``name``."""

    def deco(factory: Callable[..., Hook]) -> Callable[..., Hook]:
        _FACTORIES[name] = factory
        return factory

    return deco


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
    except TypeError as err:
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
        raise TypeError(f"hook {name} cannot be called as hook(batch, *, state, loop, rng, "
                        f"real) ({err})") from None
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
