"""Thread limits: one BLAS/OpenMP/torch thread per worker process.

With one process per core, the libraries' own thread pools oversubscribe the cores
(measured 10–20× slower for torch on 2 cores), so every worker calls :func:`limit_threads`.
"""

from __future__ import annotations

import os
import sys

__all__ = ["THREAD_VARS", "blas_threads", "cpu_count", "limit_threads"]

#: Environment variables read by BLAS/OpenMP libraries (and torch) when they start.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def cpu_count() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def limit_threads(n: int = 1) -> dict[str, int | None]:
    """Limit this process to ``n`` BLAS/OpenMP/torch threads; return what is in force.

    Libraries loaded later read the environment variables; those already loaded are
    limited through threadpoolctl and ``torch.set_num_threads``.
    """
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # threadpoolctl is optional: the variables still hold
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return {"torch": torch.get_num_threads() if torch is not None else None,
            "blas": blas_threads()}


def blas_threads() -> int | None:
    """The largest thread count of the BLAS/OpenMP pools loaded in this process."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info()]
    return max(counts) if counts else None
