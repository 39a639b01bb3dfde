"""How big a run will be, estimated before any work: memory and disk.

``stabfw validate`` prints the estimate and, like ``stabfw run`` and :func:`stabfw.run_loop`,
refuses a run whose results alone would not fit in this machine's memory or on the disk of
its run directory (``seeds: 1000000000`` is refused at once, without building a list of
10⁹ seeds). What is counted: θ of every seed and generation and the metrics table (in
memory, while the run assembles them, about three copies; on disk, the checkpoint journal
and the result files). A domain's own memory (data sets, models) is not known in advance
and is not counted; neither is time, which depends on the domain alone.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stabfw.core.checks import RESERVED_COLUMNS
from stabfw.errors import ConfigError

__all__ = ["SizeEstimate", "check_size", "estimate_size", "human_bytes"]

_ASSUMED_METRICS = 8  # metric columns of a domain that declares none
_ASSUMED_DIM = 1
_CSV_BYTES = 14  # characters per value in metrics.csv ("%.10g" and a comma)
_MEMORY_COPIES = 3  # the blocks, the assembled arrays and the final table


def human_bytes(n: float) -> str:
    """``n`` bytes in B, kB, MB, GB, TB (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


@dataclass(frozen=True)
class SizeEstimate:
    """The estimated size of a run's results.

    Attributes
    ----------
    n_seeds, generations : int
    dim_theta, n_metrics : int
        Length of θ and number of metric columns (assumed when the domain does not say).
    memory_bytes, disk_bytes : float
    assumed : list of str
        What was guessed because the domain's :meth:`~stabfw.SelfConsumingLoop.size_hint`
        or :meth:`~stabfw.SelfConsumingLoop.metric_info` did not say.
    """

    n_seeds: int
    generations: int
    dim_theta: int
    n_metrics: int
    memory_bytes: float
    disk_bytes: float
    assumed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: ``≈ 1.2 MB in memory, 2.5 MB on disk``."""
        guess = f" (assuming {', '.join(self.assumed)})" if self.assumed else ""
        return (f"≈ {human_bytes(self.memory_bytes)} in memory, "
                f"{human_bytes(self.disk_bytes)} on disk{guess}")


def estimate_size(n_seeds: int, generations: int, dim_theta: int | None = None,
                  n_metrics: int | None = None) -> SizeEstimate:
    """The size of a run of ``n_seeds`` replicates over ``generations`` generations."""
    assumed = []
    if dim_theta is None:
        dim_theta = _ASSUMED_DIM
        assumed.append(f"dim θ = {_ASSUMED_DIM}")
    if n_metrics is None:
        n_metrics = _ASSUMED_METRICS
        assumed.append(f"{_ASSUMED_METRICS} domain metrics")
    rows = float(n_seeds) * (generations + 1)  # float: 10⁹ × 10⁵ must not overflow
    columns = len(RESERVED_COLUMNS) + n_metrics
    binary = rows * (dim_theta + columns) * 8
    memory = _MEMORY_COPIES * binary
    disk = binary + rows * dim_theta * 8 + rows * columns * _CSV_BYTES  # journal + results
    return SizeEstimate(int(n_seeds), int(generations), int(dim_theta), int(n_metrics),
                        memory, disk, assumed)


def _physical_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE")) * float(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _free_disk(path: Path) -> float | None:
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return float(shutil.disk_usage(p).free)
    except OSError:
        return None


def check_size(est: SizeEstimate, out_dir: str | Path | None = None) -> None:
    """Refuse a run whose results cannot fit in this machine's memory, or on the free disk
    of ``out_dir`` (when given).

    Raises
    ------
    ConfigError
        Naming the estimate, the limit and what to reduce.
    """
    memory = _physical_memory()
    what = (f"{est.n_seeds:,} seeds × {est.generations + 1:,} generations "
            f"(0–{est.generations:,})")
    if memory is not None and est.memory_bytes > 0.8 * memory:
        raise ConfigError(
            f"loop.seeds / loop.generations: {what} need {est.describe()}; this machine has "
            f"{human_bytes(memory)} of memory. Use fewer seeds or generations (or split the "
            "seeds over several runs)")
    if out_dir is not None:
        free = _free_disk(Path(out_dir))
        if free is not None and est.disk_bytes > free:
            raise ConfigError(
                f"loop.seeds / loop.generations: {what} need {est.describe()}; the disk of "
                f"{out_dir} has {human_bytes(free)} free. Free space, choose another --out, or "
                "use fewer seeds or generations")
