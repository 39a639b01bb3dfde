"""The ``stabfw`` command line: one module per subcommand, each with a ``register``.

A user's mistake never shows a Python traceback: every error prints one or a few lines
(at most 2 000 characters) naming the problem and the fix, and the command exits with a
documented code (:data:`stabfw.errors.EXIT_CODES`): 0 success, 1 the run failed, 2 refused
before any work (bad input), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). ``--debug``
shows the traceback as well.
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import signal
import sys
from typing import Any

from stabfw.cli import analyze, listing, report, run, sweep, validate
from stabfw.errors import EXIT_CODES, MAX_MESSAGE, RunError, StabfwError, clip
from stabfw.run.provenance import VERSION

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: The subcommand modules, in the order ``stabfw --help`` lists them.
SUBCOMMANDS = (run, validate, listing, sweep, analyze, report)

_EPILOG = """exit codes: 0 success (also --resume of a finished run); 1 the run failed (see
the message; a checkpoint is kept); 2 refused before any work (bad config, command line, data
file or run directory); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Add --debug for
a Python traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="stabfw", description="Does a model retrained on its own outputs stay healthy "
                                   "or collapse?", epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"stabfw {VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    for p in sub.choices.values():  # --debug also after the subcommand
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (the checkpoint is kept)."""


_SIGNALLED: dict[str, int] = {}


def _on_sigterm(signum: int, frame: Any) -> None:
    _SIGNALLED["signal"] = signum
    raise _Terminated("terminated (SIGTERM)")


def _resume_hint(args: argparse.Namespace) -> str | None:
    """The command that continues this one: the same, with ``--resume``."""
    if args.command not in ("run", "sweep") or not getattr(args, "config", None):
        return None
    cmd = ["stabfw", args.command, args.config]
    out = getattr(args, "resolved_out", None) or getattr(args, "out", None)
    if out:
        cmd += ["--out", str(out)]
    for item in getattr(args, "set", None) or []:
        cmd += ["--set", item]
    if args.command == "sweep" and getattr(args, "backend", None):
        cmd += ["--backend", args.backend]
    return shlex.join([*cmd, "--resume"])


def _say(args: argparse.Namespace, text: str) -> None:
    print(clip(f"stabfw {args.command}: {text}", MAX_MESSAGE), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stabfw`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    debug = bool(getattr(args, "debug", False))
    _SIGNALLED.clear()
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a worker thread)
        previous = None
    try:
        return args.func(args)
    except BaseException as err:  # every way out, each with a clean message
        if isinstance(err, SystemExit):
            raise
        if debug:
            import traceback

            traceback.print_exc()
        return _report(args, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _report(args: argparse.Namespace, err: BaseException) -> int:
    """Print ``err`` for a user; return the exit code."""
    hint = _resume_hint(args)
    if isinstance(err, KeyboardInterrupt):
        terminated = isinstance(err, _Terminated) or "signal" in _SIGNALLED
        what = str(err) if str(err) and not isinstance(err, _Terminated) else "interrupted"
        if terminated and what.startswith("interrupted"):
            what = "terminated" + what.removeprefix("interrupted")
        keep = f"; continue with: {hint}" if hint else ""
        _say(args, f"{what}{keep}")
        return EXIT_CODES["terminated" if terminated else "interrupted"]
    if isinstance(err, StabfwError):
        text = str(err)
        if isinstance(err, RunError) and err.checkpoint is not None and hint:
            text += f"\ncontinue with: {hint}"
        _say(args, text)
        return err.exit_code
    if isinstance(err, MemoryError):
        _say(args, "out of memory; use fewer seeds or generations, or a smaller domain "
                   "(a checkpoint, if any, is kept: continue with --resume)")
        return EXIT_CODES["run_failed"]
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        fix = (" — free disk space and continue with --resume"
               if err.errno == errno.ENOSPC else "")
        _say(args, f"error: {err.strerror or err}{where}{fix}")
        return EXIT_CODES["run_failed"]
    _say(args, f"internal error: {type(err).__name__}: {err}\nThis is a bug in stabfw or in the "
               "domain's code, not in your input; run again with --debug for the traceback")
    return EXIT_CODES["run_failed"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
