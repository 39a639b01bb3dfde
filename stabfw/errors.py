"""The exceptions stabfw raises for a user's mistake, a domain's broken promise or a run
that cannot go on.

Every error a user can cause is a :class:`StabfwError`: the command line prints its
message (one or a few lines, at most :data:`MAX_MESSAGE` characters; the traceback only
with ``--debug``) and exits with the class's :attr:`~StabfwError.exit_code`:

====  =======================================================================
code  meaning
====  =======================================================================
0     success (also: ``--resume`` of a run that had finished already)
1     the run failed: a domain's code raised or returned what the runner cannot
      use, a sweep cell failed, a file could not be written (disk full)
2     refused before any work: a bad config or command line, a data file that
      cannot be read, a run directory that is locked, holds another run or a
      corrupt checkpoint
130   interrupted (Ctrl-C); 143: terminated (SIGTERM). The checkpoint is kept:
      continue with ``--resume``
====  =======================================================================
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_CODES",
    "MAX_MESSAGE",
    "CheckpointError",
    "ConfigError",
    "GenerationError",
    "LoopCheckError",
    "LoopError",
    "RunDirError",
    "RunError",
    "RunInterrupted",
    "StabfwError",
    "SweepFailed",
    "clip",
    "format_validation_error",
    "short_repr",
]

#: The longest message a user is shown for one error (characters).
MAX_MESSAGE = 2000

#: Exit codes of the ``stabfw`` command (see the module docstring).
EXIT_CODES = {"ok": 0, "run_failed": 1, "refused": 2, "interrupted": 130, "terminated": 143}


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    note = f" … ({len(text) - limit + 40} more characters)"
    return text[: limit - len(note)] + note


def short_repr(value: Any, limit: int = 200) -> str:
    """A bounded ``repr`` of ``value``: never builds the text of a huge nested list."""
    r = reprlib.Repr()
    r.maxlist = r.maxtuple = r.maxset = r.maxdict = 12
    r.maxlevel = 3
    r.maxstring = r.maxother = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StabfwError(Exception):
    """Base class of the errors whose message tells a user what to change.

    Attributes
    ----------
    exit_code : int
        What the command line exits with (see the module docstring).
    """

    exit_code = EXIT_CODES["run_failed"]


class ConfigError(StabfwError, ValueError):
    """A configuration is invalid; the message names each bad field and what is accepted."""

    exit_code = EXIT_CODES["refused"]


class LoopCheckError(StabfwError, AssertionError):
    """A loop broke the :class:`~stabfw.SelfConsumingLoop` contract; ``problems`` lists how."""

    exit_code = EXIT_CODES["refused"]

    def __init__(self, loop: Any, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{type(loop).__name__} fails check_loop:\n{lines}")


class RunDirError(StabfwError, ValueError):
    """A run directory cannot be used as asked: it is a file, cannot be written, is locked
    by another run, or holds a run (finished or not) that this one would overwrite.

    Attributes
    ----------
    path : pathlib.Path or None
        The directory (or the file in it) the message is about.
    """

    exit_code = EXIT_CODES["refused"]

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class CheckpointError(RunDirError):
    """A checkpoint or result file is corrupt, missing, or was written by another run; the
    message names the file, what differs and how to recover."""


class RunError(StabfwError):
    """A run stopped at one seed and generation; what was computed before is kept.

    Attributes
    ----------
    seed, generation : int or None
        Where it stopped (``seed`` is None on the vectorised path, which advances all seeds
        at once).
    method : str or None
        The loop method that failed (``fit``, ``generate``, ``theta``, ``metrics``, ...).
    trajectory : Trajectory or None
        Every generation completed before the failure (all seeds), or None when not even
        generation 0 was.
    checkpoint : pathlib.Path or None
        The run directory whose checkpoint holds the same generations (resume from it).
    """

    def __init__(self, message: str, *, seed: int | None = None, generation: int | None = None,
                 method: str | None = None):
        super().__init__(message)
        self.seed, self.generation, self.method = seed, generation, method
        self.trajectory: Any = None
        self.checkpoint: Path | None = None

    def __reduce__(self):
        # keyword-only attributes survive pickling (a run's worker process raises them)
        return (self.__class__, self.args, self.__dict__)


class LoopError(RunError, ValueError):
    """A loop's method returned something the runner cannot use (θ of the wrong shape or
    type, a batch of the wrong size, a metric that is not a number or has a reserved name)."""


class GenerationError(RunError):
    """A loop's own code raised during a run; the original exception is ``__cause__``."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM under ``stabfw``) stopped a run; its checkpoint is kept.

    A ``KeyboardInterrupt``, so that code catching that still does. Attributes as
    :class:`RunError`: ``seed``, ``generation`` (the one being computed), ``trajectory`` (the
    generations completed) and ``checkpoint`` (the run directory, or None).
    """

    def __init__(self, message: str, *, seed: int | None = None, generation: int | None = None):
        super().__init__(message)
        self.seed, self.generation = seed, generation
        self.trajectory: Any = None
        self.checkpoint: Path | None = None


class SweepFailed(StabfwError, RuntimeError):
    """Some cells of a sweep failed; the others finished and were written.

    Attributes
    ----------
    failed : dict
        Cell name → the one-line error of that cell.
    """

    def __init__(self, message: str, failed: dict[str, str] | None = None):
        super().__init__(message)
        self.failed = dict(failed or {})


_MAX_PROBLEMS = 12


def format_validation_error(err: Any, prefix: str = "") -> str:
    """One line per problem of a pydantic ``ValidationError``: ``dotted.field: message (got v)``.

    At most a dozen problems are listed (a config can hold thousands of bad entries) and
    each value is shown shortened, so the message stays within :data:`MAX_MESSAGE`.
    """
    lines = []
    errors = err.errors()
    for e in errors[:_MAX_PROBLEMS]:
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = str(e["msg"]).removeprefix("Value error, ")
        # a model-level check names its field first ("stability.axis: ..."): join the paths
        m = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg, re.S)
        if m and e.get("type") == "value_error":
            loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
        got = e.get("input")
        shown = "" if isinstance(got, Mapping) or got is None else f" (got {short_repr(got)})"
        lines.append(f"  {loc or '<root>'}: {clip(msg, 400)}{shown}")
    if len(errors) > _MAX_PROBLEMS:
        lines.append(f"  … and {len(errors) - _MAX_PROBLEMS} more problems")
    return clip("invalid configuration:\n" + "\n".join(lines))
