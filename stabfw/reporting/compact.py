"""Compact renderings for report tables: numbers, short lists, inline SVG sparklines of long
series, and nested records folded into one row (never ``[61 values]``, never thirty
``evidence.*`` lines)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from stabfw._util.numbers import fmt

__all__ = ["analysis_groups", "is_series", "sparkline_svg", "value_html"]

#: Lists up to this long are written out; longer numeric ones become a sparkline.
SHORT = 8


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _num(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v, 5)
    return str(v)


def is_series(value: Any) -> bool:
    """A 1-D list of numbers (``None`` allowed for missing values)."""
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                    for v in value)
            and any(v is not None for v in value))


def sparkline_svg(values: Sequence[Any], width: int = 140, height: int = 26,
                  label: str = "") -> str:
    """A small inline SVG line of ``values`` (missing and non-finite values leave gaps),
    with the first, last, min and max in its tooltip. Self-contained markup, no script.

    Parameters
    ----------
    values : sequence of float or None
    width, height : int
        Pixel size.
    label : str
        What the series is (for the tooltip and ``aria-label``).
    """
    ys = [_finite(v) for v in values]
    fin = [y for y in ys if y is not None]
    if not fin:
        return '<span class="muted">no finite values</span>'
    lo, hi = min(fin), max(fin)
    span = (hi - lo) or 1.0
    n = max(len(ys) - 1, 1)
    pad = 2
    segments, current = [], []
    for i, y in enumerate(ys):
        if y is None:
            if current:
                segments.append(current)
            current = []
            continue
        x = pad + (width - 2 * pad) * i / n
        yy = height - pad - (height - 2 * pad) * (y - lo) / span
        current.append(f"{x:.1f},{yy:.1f}")
    if current:
        segments.append(current)
    lines = "".join(
        f'<polyline points="{" ".join(seg)}" fill="none" stroke="#2b6cb0" stroke-width="1.4"/>'
        if len(seg) > 1 else
        f'<circle cx="{seg[0].split(",")[0]}" cy="{seg[0].split(",")[1]}" r="1.5" '
        'fill="#2b6cb0"/>' for seg in segments)
    first, last = fin[0], fin[-1]
    tip = (f"{label + ': ' if label else ''}{len(ys)} values, first {fmt(first, 4)}, last "
           f"{fmt(last, 4)}, min {fmt(lo, 4)}, max {fmt(hi, 4)}")
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{_e(tip)}"><title>{_e(tip)}</title>{lines}</svg>'
            f'<span class="sparknote">{_e(fmt(first, 3))} → {_e(fmt(last, 3))} '
            f'({len(ys)} values)</span>')


def value_html(key: str, value: Any, where: str = "summary.json") -> str:
    """One table cell's markup for an analyzer result's value.

    Scalars are written out (a ``verdict`` coloured), short lists joined, long numeric
    series drawn as a sparkline, a nested record folded into a ``<details>`` with its
    JSON, and anything larger left in the JSON file, named by its key.
    """
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, (int, float)):
        return f'<span class="num">{_e(_num(value))}</span>'
    if isinstance(value, str):
        if key.split(".")[-1] == "verdict":
            good = value in ("converged", "stationary_noise")
            return f'<span class="{"good" if good else "bad"}">{_e(value)}</span>'
        return _e(value)
    if is_series(value):
        if len(value) <= SHORT:
            return _e(", ".join("—" if v is None else _num(v) for v in value))
        return sparkline_svg(value, label=key)
    if isinstance(value, (list, tuple)) and len(value) <= SHORT and all(
            is_series(v) and len(v) == 2 for v in value):  # (re, im) pairs: eigenvalues
        return _e(", ".join(_complex(v) for v in value))
    text = json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, Mapping) and len(text) <= 1200:
        n = len(value)
        return (f'<details><summary>{n} field{"s" if n != 1 else ""}</summary>'
                f'<pre class="json">{_e(json.dumps(value, indent=1, default=str, ensure_ascii=False))}'
                "</pre></details>")
    size = f"{len(value)} entries" if isinstance(value, (list, tuple, Mapping)) else "a record"
    return f'<span class="muted">{size}, in {_e(where)} at <code>{_e(key)}</code></span>'


def _complex(pair: Sequence[Any]) -> str:
    re_, im = (_finite(pair[0]) or 0.0), (_finite(pair[1]) or 0.0)
    if im == 0:
        return fmt(re_, 4)
    return f"{fmt(re_, 4)} {'+' if im > 0 else '−'} {fmt(abs(im), 4)}i"


def analysis_groups(analysis: Mapping[str, Any] | None,
                    skip: Sequence[str] = ("headline",)) -> list[dict[str, Any]]:
    """Analyzer results as compact tables: one group per analyzer (one per method or
    metric for the nested ones), each ``{"name", "rows": [(key, html)]}``.

    ``fixed_point_metrics`` and ``jacobian`` hold one result per metric or method; they
    become one group each (``jacobian: finite_difference``). The headline is on the
    summary card and left out here.
    """
    groups: list[dict[str, Any]] = []
    for name, result in (analysis or {}).items():
        if name in skip:
            continue
        nested = (isinstance(result, Mapping) and result
                  and all(isinstance(v, Mapping) for v in result.values())
                  and name in ("jacobian", "fixed_point_metrics"))
        items = result.items() if nested else [(None, result)]
        for sub, res in items:
            title = f"{name}: {sub}" if sub else name
            prefix = f"analysis.{name}" + (f".{sub}" if sub else "")
            if isinstance(res, Mapping):
                rows = [(k, value_html(f"{prefix}.{k}", v)) for k, v in res.items()]
            else:
                rows = [(name, value_html(prefix, res))]
            groups.append({"name": title, "rows": rows})
    return groups
