"""The exceptions stabfw raises for a user's mistake or a domain's broken promise.

Every error a user can cause is a :class:`StabfwError`: the command line prints its
message (no traceback unless ``--debug``) and exits non-zero.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "LoopCheckError", "StabfwError", "format_validation_error"]


class StabfwError(Exception):
    """Base class of the errors whose message tells a user what to change."""


class ConfigError(StabfwError, ValueError):
    """A configuration is invalid; the message names each bad field and what is accepted."""


class LoopCheckError(StabfwError, AssertionError):
    """A loop broke the :class:`~stabfw.SelfConsumingLoop` contract; ``problems`` lists how."""

    def __init__(self, loop: Any, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{type(loop).__name__} fails check_loop:\n{lines}")


def format_validation_error(err: Any, prefix: str = "") -> str:
    """One line per problem of a pydantic ``ValidationError``: ``dotted.field: message (got v)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = str(e["msg"]).removeprefix("Value error, ")
        # a model-level check names its field first ("stability.axis: ..."): join the paths
        m = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg, re.S)
        if m and e.get("type") == "value_error":
            loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
        got = e.get("input")
        shown = "" if isinstance(got, Mapping) or got is None else f" (got {_short(got)})"
        lines.append(f"  {loc or '<root>'}: {msg}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


def _short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters (a config may hold huge lists)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 20] + f"… ({len(text)} chars)"
