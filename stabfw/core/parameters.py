"""Constructor parameters of a loop, scikit-learn style, and their pydantic model.

A loop's *parameters* are its constructor arguments (``dim``, ``n``, ...), never θ (the
vector :meth:`SelfConsumingLoop.theta` returns). :func:`get_params` / :func:`set_params`
follow scikit-learn's conventions, so ``sklearn.base.clone(loop)`` works;
:func:`params_model` turns a constructor signature into the pydantic model that validates a
config's ``domain:`` section.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import ConfigDict, create_model

__all__ = ["get_params", "param_names", "params_model", "set_params"]


def param_names(cls: type) -> list[str]:
    """The constructor's named parameters (no ``self``, ``*args`` or ``**kwargs``)."""
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def get_params(obj: Any, deep: bool = True) -> dict[str, Any]:
    """Constructor arguments of ``obj`` as stored on it; nested ones as ``name__sub``
    when ``deep`` and the value has ``get_params`` itself."""
    out: dict[str, Any] = {}
    for name in param_names(type(obj)):
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        out[name] = value
        if deep and hasattr(value, "get_params") and not isinstance(value, type):
            for k, v in value.get_params(deep=True).items():
                out[f"{name}__{k}"] = v
    return out


def set_params(obj: Any, **params: Any) -> Any:
    """Set constructor arguments (``name`` or nested ``name__sub``); return ``obj``.

    State a loop built lazily from its parameters (attributes starting with ``_``) is
    dropped, so the next use rebuilds it from the new values.
    """
    valid = set(param_names(type(obj)))
    nested: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        name, _, sub = key.partition("__")
        if name not in valid:
            raise ValueError(f"{type(obj).__name__} has no parameter {name!r}; accepted: "
                             f"{', '.join(sorted(valid)) or 'none'}")
        if sub:
            nested.setdefault(name, {})[sub] = value
        else:
            setattr(obj, name, value)
    for name, sub in nested.items():
        getattr(obj, name).set_params(**sub)
    for attr in [a for a in vars(obj) if a.startswith("_")]:
        delattr(obj, attr)
    return obj


def _resolved_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # unresolvable annotations: leave those parameters untyped
        return {}


def params_model(cls: type):
    """A pydantic model of ``cls``'s constructor arguments (``extra="forbid"``).

    A domain may define its own as the class attribute ``Params``; otherwise one is
    derived from the annotated ``__init__`` signature.
    """
    own = getattr(cls, "Params", None)
    if own is not None:
        return own
    fields: dict[str, Any] = {}
    hints: dict[str, Any] | None = None
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        if isinstance(ann, str):  # from __future__ import annotations
            hints = _resolved_hints(cls) if hints is None else hints
            ann = hints.get(pname, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[pname] = (ann, default)
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(
        extra="forbid", arbitrary_types_allowed=True), **fields)
