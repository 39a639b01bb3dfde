"""What the subcommands share: the default output directory and the ``--set`` option."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_set_option", "default_out"]


def default_out(config_path: str) -> Path:
    """``runs/<config name>``: where a run or sweep writes without ``--out``."""
    return Path("runs") / Path(config_path).stem


def add_set_option(p: argparse.ArgumentParser, example: str = "loop.lam=0.5") -> None:
    """The repeatable ``--set KEY.PATH=VALUE`` override."""
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help=f"override a config value (repeatable), e.g. --set {example}")
