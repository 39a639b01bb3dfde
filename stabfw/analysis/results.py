"""The family of analyzer results: frozen records with one JSON form.

Every result (:class:`~stabfw.FixedPointResult`, :class:`~stabfw.FixedPointSolution`,
:class:`~stabfw.JacobianResult`, :class:`~stabfw.CriticalLambda`, ...) is a frozen
dataclass with a ``status`` (or ``verdict``) from a snake_case vocabulary, ``to_dict()``
for a JSON-ready summary and ``to_json()`` through the one codec of
:mod:`stabfw._util.jsonio` (∞ as ``"inf"``, NaN as ``null``).
"""

from __future__ import annotations

from typing import Any

from stabfw._util.jsonio import dumps, to_jsonable

__all__ = ["AnalysisResult"]


class AnalysisResult:
    """Mixin of every analyzer result."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every result defines it
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text (see :mod:`stabfw._util.jsonio`)."""
        return dumps(self.to_dict(), indent=indent)

    @staticmethod
    def _plain(obj: Any) -> Any:
        """Plain JSON values of ``obj`` (numpy, complex, ∞ and NaN handled)."""
        return to_jsonable(obj)
