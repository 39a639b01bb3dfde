"""Shared test settings: one BLAS/torch thread (CI has 2 cores), headless plotting."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Test the package as it is installed: `python -m pytest` puts the repository root on
# sys.path, where the folder domains/ would import as a top-level package of its own
# (a second copy of every domain module). stabfw's domains are stabfw.domains only.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    yield
