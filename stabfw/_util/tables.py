"""Cell tables of a sweep (one row per cell, swept values as dotted-key columns): grouping
by the values of some swept axes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["group_rows", "other_axes", "value_key"]


def value_key(v: Any) -> str:
    """A hashable, order-stable key for any swept value (lists and dicts included)."""
    return json.dumps(v, sort_keys=True, default=str)


def other_axes(table: Any, axis: str) -> list[str]:
    """The swept columns of a cell table (dotted names) other than ``axis``."""
    return [c for c in table.columns if "." in c and c != axis]


def group_rows(table: Any, axes: list[str]) -> Iterator[tuple[dict[str, Any], Any]]:
    """``(values of axes, rows)`` for each combination of ``axes`` in ``table``."""
    if not axes:
        yield {}, table
        return
    keyed = table.assign(**{f"__{a}": table[a].map(value_key) for a in axes})
    for _, sub in keyed.groupby([f"__{a}" for a in axes], sort=False):
        yield {a: sub[a].iloc[0] for a in axes}, sub.drop(columns=[f"__{a}" for a in axes])
