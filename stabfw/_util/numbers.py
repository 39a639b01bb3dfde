"""Infinity parsing and number formatting, in one place.

Configs, sweep grids and JSON files spell an infinite λ as ``.inf``, ``inf`` or
``Infinity``; :func:`parse_inf` turns any of them into ``math.inf``. :func:`fmt` writes a
number for people (``∞``), :func:`slug` for a directory name (``inf``) and
:func:`yaml_scalar` for a ``--set`` override (``.inf``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

__all__ = ["INF_STRINGS", "fmt", "is_inf_string", "parse_inf", "slug", "yaml_scalar"]

INF_STRINGS = frozenset({"inf", ".inf", "+inf", "+.inf", "infinity", "+infinity"})
_NEG_INF_STRINGS = frozenset({"-inf", "-.inf", "-infinity"})


def is_inf_string(v: Any) -> bool:
    """Whether ``v`` is a string that spells ±∞."""
    return isinstance(v, str) and v.strip().lower() in INF_STRINGS | _NEG_INF_STRINGS


def parse_inf(v: Any) -> Any:
    """``math.inf`` (or ``-math.inf``) for a string that spells it; ``v`` unchanged otherwise."""
    if isinstance(v, str):
        s = v.strip().lower()
        if s in INF_STRINGS:
            return math.inf
        if s in _NEG_INF_STRINGS:
            return -math.inf
    return v


def fmt(v: Any, digits: int = 4) -> str:
    """A number for people: ``∞``, ``−∞``, ``—`` for NaN/None, else ``digits`` significant."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def slug(v: Any) -> str:
    """A value as part of a file or directory name (``inf``, lists joined by ``-``)."""
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (list, tuple)):
        return "-".join(slug(x) for x in v)
    if isinstance(v, dict):
        return "-".join(f"{k}{slug(x)}" for k, x in v.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", str(v))


def yaml_scalar(v: Any) -> str:
    """A value as the text of a ``key=value`` override (YAML flow style, ``.inf`` for ∞)."""
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()
