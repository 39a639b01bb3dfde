"""The one JSON codec of results and run files.

Files are valid JSON that any reader (a browser's ``JSON.parse`` included) accepts: no bare
``NaN`` or ``Infinity``. ±∞ is written as the strings ``"inf"`` / ``"-inf"`` and read back
as floats; NaN is written as ``null``. numpy scalars and arrays become numbers and lists,
complex numbers ``[re, im]``, objects with ``to_dict()`` their dict.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.atomic import atomic_write

__all__ = ["dumps", "flatten", "from_jsonable", "loads", "read_json", "to_jsonable", "write_json"]


def _float(x: float) -> float | str | None:
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types for ``obj`` (see the module docstring for the rules)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _float(float(obj))
    if isinstance(obj, (complex, np.complexfloating)):
        return [_float(float(obj.real)), _float(float(obj.imag))]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):  # pydantic
        return to_jsonable(obj.model_dump(mode="python"))
    return str(obj)


def from_jsonable(obj: Any) -> Any:
    """Undo :func:`to_jsonable`'s spelling of ±∞ (``"inf"`` / ``"-inf"`` → float)."""
    if isinstance(obj, str):
        return math.inf if obj == "inf" else -math.inf if obj == "-inf" else obj
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text of ``obj``; never writes ``NaN`` or ``Infinity``."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def loads(text: str) -> Any:
    """Parse JSON written by :func:`dumps` (∞ comes back as a float)."""
    return from_jsonable(json.loads(text))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    text = dumps(obj)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | Path) -> Any:
    """Read a file written by :func:`write_json`."""
    return loads(Path(path).read_text(encoding="utf-8"))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """The scalar leaves of a nested dict under dotted keys: numbers as floats, strings,
    booleans and None as they are; lists are left out."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (bool, str, np.bool_)) or value is None:
        out[prefix] = value
    elif isinstance(value, (int, float, np.integer, np.floating)):
        out[prefix] = float(value)
    return out
