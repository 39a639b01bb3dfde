"""The code blocks of docs/extending.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def test_vectorized_loop_example_matches_its_per_seed_path():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = next(b for b in blocks if "class VectorCoin" in b)
    ns: dict = {}
    exec(compile(example, str(DOC), "exec"), ns)  # the block asserts vectorised == per seed
    fast = ns["fast"]
    assert fast.meta["path"] == "vectorized" and ns["slow"].meta["path"] == "per_seed"
    assert fast.params.shape == (50, 21, 1)
