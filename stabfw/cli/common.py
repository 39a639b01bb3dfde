"""What the subcommands share: the default output directory and the ``--set`` option."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_set_option", "default_out", "print_headline"]


def default_out(config_path: str) -> Path:
    """``runs/<config name>``: where a run or sweep writes without ``--out``."""
    return Path("runs") / Path(config_path).stem


def add_set_option(p: argparse.ArgumentParser, example: str = "loop.lam=0.5") -> None:
    """The repeatable ``--set KEY.PATH=VALUE`` override."""
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help=f"override a config value (repeatable), e.g. --set {example}")


def print_headline(out: Path, sweep: bool) -> None:
    """Print the headline sentences a run (``summary.json["analysis"]["headline"]``) or a
    sweep (``summary.json["headline"]``) wrote, if any."""
    from stabfw._util.jsonio import read_json

    f = Path(out) / "summary.json"
    if not f.is_file():
        return
    data = read_json(f)
    h = data.get("headline") if sweep else (data.get("analysis") or {}).get("headline")
    if not h:
        return
    print("headline:")
    for row in h.get("rows", []):
        print(f"  {row.get('text')}")
    crit = (h.get("critical") or {}).get("text")
    if crit:
        print(f"  {crit}")
