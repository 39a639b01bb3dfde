"""Where sweep cells and the seeds of a run run: in this process, in local worker processes,
or on a Ray cluster.

Every backend offers ``map(fn, tasks)``, yielding ``fn(task)`` for each task as it finishes
(in any order), and ``submit(fn, task)``, a :class:`concurrent.futures.Future` of ``fn(task)``
for work whose next tasks depend on the last results (the seeds of one run), with
``cancel(futures)`` to drop what is still pending. ``fn`` must be a module-level function, so
that it pickles by reference.

* ``serial``: one after the other in this process.
* ``local``: loky's reusable process pool (the one joblib uses). Each worker is limited to
  one BLAS/OpenMP/torch thread: with one process per core, the libraries' own thread pools
  would oversubscribe the cores (measured 10–20× slower for torch on 2 cores). Workers
  exit within a second when the sweep process dies (even by SIGKILL), so no orphan keeps
  writing cells.
* ``ray``: one Ray Core task per cell, on ``ray.init()`` (a local instance) or an existing
  cluster (``address``). Workers write their cell directory themselves, so the sweep
  directory must lie on storage every node sees; with ``storage="return"`` the worker runs
  the cell in a scratch directory and returns the files to the driver instead.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, as_completed
from typing import Any

from stabfw._util.atomic import atomic_write
from stabfw._util.threads import THREAD_VARS, blas_threads, cpu_count, limit_threads
from stabfw.errors import ConfigError

__all__ = [
    "BACKENDS",
    "LocalBackend",
    "RayBackend",
    "SerialBackend",
    "check_backend_args",
    "cpu_count",
    "limit_threads",
    "make_backend",
    "ray_task",
    "worker_info",
    "write_returned",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "serial", "local", "ray")


_WATCHED: list[int] = []
_LIMITED = [-1]  # len(sys.modules) when this worker last limited its threads
_FROZEN = [-1]  # ... and when it last froze its heap


def _exit_with(driver: int) -> None:
    """In a worker process: exit as soon as the sweep process ``driver`` is gone.

    A SIGKILLed sweep cannot stop its workers; without this they would go on computing and
    writing cell directories (orphans beside a resumed sweep's new workers). The worker's
    cell lock dies with it and its checkpoint is consistent (atomic writes).
    """
    if _WATCHED or os.getpid() == driver:
        return
    _WATCHED.append(driver)
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(driver, 0)
                alive = os.getppid() == parent
            except ProcessLookupError:
                alive = False
            except PermissionError:  # pragma: no cover - another user's pid now
                alive = False
            if not alive:
                os._exit(1)

    threading.Thread(target=watch, name="stabfw-driver-watch", daemon=True).start()


def _limited_call(fn: Callable[[Any], Any], task: Any, driver: int | None = None) -> Any:
    """Run ``fn(task)`` in a worker limited to one thread (also after torch is imported);
    with ``driver`` (the sweep's pid) the worker exits when that process dies."""
    if driver is not None:
        _exit_with(driver)
    if len(sys.modules) != _LIMITED[0]:
        # threadpoolctl scans every loaded library (~7 ms per task with sktime loaded):
        # again only when something was imported since, which may have loaded a new one
        limit_threads()
        _LIMITED[0] = len(sys.modules)
    result = fn(task)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:  # imported during the task
        torch.set_num_threads(1)
    if len(sys.modules) != _FROZEN[0]:
        # loky runs gc.collect() in an idle worker every second when psutil is missing:
        # ~120 ms with sktime loaded, a stall in every run's seeds. What the imports built
        # lives as long as the worker, so it leaves the collector's scans (~1 ms then);
        # unfreezing first lets a later freeze collect what has since become garbage
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _FROZEN[0] = len(sys.modules)
    return result


def worker_info(task: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a worker runs with: process id, BLAS threads, ``OMP_NUM_THREADS``, the objects
    its garbage collector no longer scans (``gc_frozen``) and, with
    ``task={"import_torch": True}``, torch's thread count. A diagnostic task:
    ``list(make_backend("local").map(worker_info, [{}] * 2))``."""
    torch_threads = None
    if (task or {}).get("import_torch"):
        import torch

        torch_threads = torch.get_num_threads()
    return {"pid": os.getpid(), "blas": blas_threads(), "torch": torch_threads,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "gc_frozen": gc.get_freeze_count()}


def _completed(backend: Any, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
    """``backend.map`` from ``backend.submit``: results as tasks finish; on an error (or
    when the caller stops early) what has not run is dropped."""
    futures = [backend.submit(fn, t) for t in tasks]
    try:
        for f in as_completed(futures):
            yield f.result()
    finally:
        backend.cancel(f for f in futures if not f.done())


class SerialBackend:
    """Run tasks one after the other in this process."""

    name = "serial"
    workers = 1

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        """``fn(task)``, computed now: a finished future."""
        future: Future = Future()
        try:
            future.set_result(fn(task))
        except Exception as err:
            future.set_exception(err)
        return future

    def cancel(self, futures: Iterable[Future]) -> None:
        """Nothing is pending in this process."""


class LocalBackend:
    """loky worker processes on this machine, one thread each.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: one per CPU core).
    """

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def _executor(self):
        try:
            from joblib.externals.loky import get_reusable_executor
        except ImportError as err:
            raise ConfigError("sweep.backend 'local' needs joblib: pip install joblib "
                              "(or 'stabfw[distributed]'), or choose backend 'serial'") from err
        # env is set before each worker starts, so a torch imported inside a task starts
        # with one thread too; one pool for every map and submit, reused while it idles
        return get_reusable_executor(max_workers=self.workers or cpu_count(),
                                     env={v: "1" for v in THREAD_VARS})

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        """A future of ``fn(task)`` computed in a worker."""
        return self._executor().submit(_limited_call, fn, task, os.getpid())

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        yield from _completed(self, fn, tasks)

    def cancel(self, futures: Iterable[Future]) -> None:
        """Drop tasks that have not started; if some have, stop the workers (as joblib does
        when its caller stops): they would go on computing what nobody reads. Then every
        future given ends cancelled or failed with loky's ``ShutdownExecutorError``."""
        futures = [f for f in futures if not f.done()]
        if any(f.running() for f in futures):
            # loky fails every unfinished future itself as it kills the workers; one cancelled
            # here as well makes its manager thread raise (InvalidStateError) before the kill,
            # and the started futures would then never finish
            self._executor().shutdown(wait=False, kill_workers=True)
            return
        for f in futures:
            # one that starts meanwhile runs to its end, for the same reason
            f.cancel()


def ray_task(fn: Callable[[Any], Any], task: Any, storage: str) -> Any:
    """Body of a Ray task: run one cell, optionally in scratch space, returning its files."""
    if storage != "return":
        return _limited_call(fn, task)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="stabfw-cell-") as tmp:
        local = dict(task, dir=tmp)
        result = _limited_call(fn, local)
        files = {str(p.relative_to(tmp)): p.read_bytes()
                 for p in Path(tmp).rglob("*") if p.is_file()}
    return {"result": result, "files": files, "dir": task["dir"]}


class RayBackend:
    """One Ray Core task per cell.

    Parameters
    ----------
    workers : int, optional
        CPUs of the local Ray instance this backend starts (ignored with ``address``).
    address : str, optional
        An existing cluster (``"auto"``, ``"ray://host:10001"``, ...). Without it, a Ray
        instance already initialised in this process is used, else a local one is started.
    storage : {"shared", "return"}
        ``shared``: workers write the cell directories themselves (the sweep directory must
        be on storage all nodes see). ``return``: workers send the files back to the driver.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None,
                 storage: str = "shared"):
        if storage not in ("shared", "return"):
            raise ConfigError(f"ray storage must be 'shared' or 'return', got {storage!r}")
        self.workers = workers
        self.address = address
        self.storage = storage

    def _init(self):
        try:
            import ray
        except ImportError as err:
            raise ConfigError("sweep.backend 'ray' needs Ray: pip install 'stabfw[distributed]'"
                              ) from err
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.workers or cpu_count()
                # workers start with one BLAS/OpenMP thread
                kwargs["runtime_env"] = {"env_vars": {v: "1" for v in THREAD_VARS}}
            ray.init(**kwargs)
        return ray

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        """A future of ``fn(task)`` computed by a Ray task (its files stay where it writes
        them: ``storage`` is for sweep cells)."""
        ray = self._init()
        if getattr(self, "_remote", None) is None:
            self._remote = ray.remote(num_cpus=1, max_retries=0)(_limited_call)
        ref = self._remote.remote(fn, task)
        future = ref.future()
        future.ray_ref = ref  # what cancel() needs
        return future

    def cancel(self, futures: Iterable[Future]) -> None:
        """Cancel pending and running Ray tasks."""
        import ray

        for f in futures:
            if not f.done() and getattr(f, "ray_ref", None) is not None:
                ray.cancel(f.ray_ref, force=True)

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        if not tasks:
            return
        ray = self._init()
        remote = ray.remote(num_cpus=1, max_retries=0)(ray_task)
        fn_ref = ray.put(fn)
        pending = [remote.remote(fn_ref, t, self.storage) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                out = ray.get(ref)
                if self.storage == "return":
                    out = write_returned(out)
                yield out


def write_returned(out: dict[str, Any]) -> Any:
    """Write a cell's returned files under its directory on the driver; its result."""
    from pathlib import Path

    root = Path(out["dir"])
    for rel, data in out["files"].items():
        atomic_write(root / rel, lambda f, data=data: f.write(data))
    return out["result"]


def check_backend_args(name: str | None, workers: int | None, address: str | None) -> str:
    """Refuse a bad backend name, worker count or address (before any work); the name."""
    name = name or "auto"
    if name not in BACKENDS:
        raise ConfigError(f"sweep.backend: unknown backend {name!r}; choose one of "
                          f"{', '.join(BACKENDS)}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"sweep.workers must be ≥ 1, got {workers}")
    if address and name not in ("ray",):
        raise ConfigError(f"sweep.address is only used by backend 'ray' (backend is {name!r})")
    return name


def make_backend(name: str | None = "auto", workers: int | None = None,
                 address: str | None = None, n_tasks: int | None = None, **options: Any):
    """A backend by name.

    Parameters
    ----------
    name : {"auto", "serial", "local", "ray"}
        ``auto`` is ``local`` when joblib is installed and more than one task and one
        worker are at hand, else ``serial``.
    workers : int, optional
        Parallel workers (default: one per CPU core). ``workers=1`` runs ``local``
        serially in this process.
    address : str, optional
        Ray cluster address (``ray`` only).
    n_tasks : int, optional
        How many tasks will run (``auto`` picks ``serial`` for one).
    **options
        Passed to the backend (``storage`` for ``ray``).
    """
    name = check_backend_args(name, workers, address)
    n_workers = workers or cpu_count()
    if name == "auto":
        try:
            import joblib  # noqa: F401

            has_joblib = True
        except ImportError:
            has_joblib = False
            log.warning("joblib is not installed; running the sweep's cells one after the other "
                        "(pip install joblib for parallel cells)")
        name = "local" if has_joblib and n_workers > 1 and (n_tasks or 2) > 1 else "serial"
    if name == "serial" or (name == "local" and n_workers == 1):
        return SerialBackend()
    if name == "local":
        return LocalBackend(workers)
    return RayBackend(workers, address, **options)
