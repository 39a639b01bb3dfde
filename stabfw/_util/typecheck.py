"""Strictness pydantic's lax mode lacks: a boolean where a number is expected.

pydantic turns ``true`` into ``1.0`` for a ``float`` field (and ``1`` for an ``int``), so
``--set loop.lam=true`` ran λ = 1. :func:`coerced_bools` finds every such value in a raw
mapping, walking the model's annotations (unions, ``Annotated``, ``Literal``, lists, dicts
and nested models), so that the schema can refuse them, naming each dotted path.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["coerced_bools"]

_NUMBERS = (int, float, complex)


def _strip(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _arms(ann: Any) -> list[Any]:
    ann = _strip(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        out = []
        for a in typing.get_args(ann):
            out += _arms(a)
        return out
    return [ann]


def _takes_bool(arm: Any) -> bool:
    """Whether a union arm accepts a boolean as itself (or is a type we cannot judge)."""
    arm = _strip(arm)
    if arm is bool or arm is Any or arm is object:
        return True
    origin = typing.get_origin(arm)
    if origin is typing.Literal:
        return any(isinstance(v, bool) for v in typing.get_args(arm))
    if origin is not None or arm in (str, bytes, list, tuple, dict, set, type(None)):
        return False  # containers and strings: pydantic refuses a bool itself
    return not (isinstance(arm, type) and issubclass(arm, _NUMBERS))


def _numeric(arm: Any) -> bool:
    """Whether pydantic's lax mode would turn a boolean into this arm's number."""
    arm = _strip(arm)
    if typing.get_origin(arm) is typing.Literal:
        return any(isinstance(v, _NUMBERS) and not isinstance(v, bool)
                   for v in typing.get_args(arm))
    return isinstance(arm, type) and issubclass(arm, _NUMBERS) and arm is not bool


def _is_model(arm: Any) -> bool:
    return isinstance(arm, type) and hasattr(arm, "model_fields")


def coerced_bools(model: Any, raw: Any, prefix: str = "") -> list[str]:
    """Dotted paths in ``raw`` where a boolean stands for a number of ``model``'s schema.

    Parameters
    ----------
    model : pydantic model class
    raw : mapping
        The unvalidated input.
    prefix : str
        Prepended to every path (``"domain"``).
    """
    if not isinstance(raw, Mapping):
        return []
    found: list[str] = []
    for name, field in model.model_fields.items():
        keys = [name] + ([field.alias] if field.alias else [])
        for key in keys:
            if key in raw:
                found += _walk(field.annotation, raw[key], f"{prefix}.{key}" if prefix else key)
                break
    return found


def _walk(ann: Any, value: Any, path: str) -> list[str]:
    arms = _arms(ann)
    if isinstance(value, bool):
        refused = any(_numeric(a) for a in arms) and not any(_takes_bool(a) for a in arms)
        return [path] if refused else []
    found: list[str] = []
    if isinstance(value, (list, tuple)):
        # every sequence arm (list[float] | list[list[float]]): the one that fits finds them
        for arm in arms:
            origin = typing.get_origin(arm)
            if origin in (list, tuple, set, frozenset, typing.Sequence):
                args = typing.get_args(arm)
                item = args[0] if args else Any
                for i, v in enumerate(value):
                    found += [p for p in _walk(item, v, f"{path}[{i}]") if p not in found]
        return found
    if isinstance(value, Mapping):
        for arm in arms:
            if _is_model(arm):
                return coerced_bools(arm, value, path)
            if typing.get_origin(arm) in (dict, Mapping):
                args = typing.get_args(arm)
                item = args[1] if len(args) == 2 else Any
                for k, v in value.items():
                    found += _walk(item, v, f"{path}.{k}")
                return found
    return found
