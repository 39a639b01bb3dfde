"""What to record beside every result: versions, platform, time."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import sys
from importlib import metadata

from stabfw.core.streams import COMPILED

__all__ = ["VERSION", "environment"]

#: stabfw's own version (also ``stabfw.__version__``).
VERSION = "0.1.0"

_PACKAGES = ("stabfw", "numpy", "scipy", "pandas", "pydantic", "torch", "diffusers",
             "gymnasium", "sktime", "statsmodels", "scikit-learn", "ray", "joblib")


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    # read once per process: ~70 ms of metadata parsing, which a run of a cheap loop
    # would otherwise pay every time
    versions = []
    for name in _PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(versions)


def environment() -> dict[str, object]:
    """Package versions (those installed), Python, platform, whether the counter-based draws
    ran compiled (the same numbers either way), and a UTC timestamp."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": dict(_installed()),
        "compiled_draws": COMPILED,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
