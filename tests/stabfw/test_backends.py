"""Backends: choice and errors, one thread per local worker, and the same numbers from the
serial, local (loky) and Ray backends for the same seeds."""

import os
import time
from concurrent.futures import wait

import numpy as np
import pandas as pd
import pytest
from joblib.externals.loky.process_executor import ShutdownExecutorError

from stabfw.errors import ConfigError
from stabfw.experiments.sweep import run_sweep
from stabfw.run.backends import LocalBackend, RayBackend, SerialBackend, make_backend, worker_info
from stabfw.run.config import parse_config

GRID = {"loop.lam": [0.5, ".inf"], "loop.vectorize": ["never", "always"]}


def _cfg():
    return parse_config({
        "domain": {"name": "gaussian", "dim": 2, "n": 12},
        "loop": {"generations": 4, "seeds": 3},
        "output": {"report": False, "progress": False},
        "sweep": {"grid": GRID},
    })


def _cells(out):
    """params and metrics of every cell of a sweep directory."""
    res = {}
    for d in sorted((out / "cells").iterdir()):
        with np.load(d / "params.npz") as z:
            res[d.name] = (z["params"], pd.read_csv(d / "metrics.csv"))
    return res


def _assert_same(a, b):
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0], err_msg=name)
        pd.testing.assert_frame_equal(a[name][1], b[name][1], check_exact=True)


def test_make_backend_choices_and_errors():
    assert isinstance(make_backend("serial"), SerialBackend)
    assert isinstance(make_backend("local", workers=2), LocalBackend)
    assert isinstance(make_backend("local", workers=1), SerialBackend)  # nothing to share
    assert isinstance(make_backend("auto", workers=2, n_tasks=1), SerialBackend)
    assert isinstance(make_backend("auto", workers=2, n_tasks=3), LocalBackend)
    assert isinstance(make_backend("ray", workers=2), RayBackend)  # Ray starts lazily
    with pytest.raises(ConfigError, match=r"unknown backend 'spark'.*local"):
        make_backend("spark")
    with pytest.raises(ConfigError, match=r"sweep\.workers"):
        make_backend("local", workers=0)
    with pytest.raises(ConfigError, match="only used by backend 'ray'"):
        make_backend("local", address="ray://head:10001")
    with pytest.raises(ConfigError, match="storage"):
        make_backend("ray", storage="s3")


def test_local_workers_are_other_processes_with_one_blas_thread_each():
    info = list(LocalBackend(workers=2).map(worker_info, [{}] * 2))
    assert all(i["pid"] != os.getpid() for i in info)
    assert all(i["blas"] in (None, 1) for i in info), info
    # read by OpenMP/MKL and torch when they start inside a task
    assert all(i["OMP_NUM_THREADS"] == "1" for i in info), info


def test_a_worker_keeps_what_its_imports_built_out_of_the_collectors_scans():
    # loky collects garbage in an idle worker every second without psutil (~120 ms with
    # sktime loaded): the objects of a worker's imports are frozen after its first task
    backend = LocalBackend(workers=2)
    list(backend.map(worker_info, [{}] * 4))
    assert all(i["gc_frozen"] > 10_000 for i in backend.map(worker_info, [{}] * 4))


def test_submit_gives_futures():
    for backend in (SerialBackend(), LocalBackend(workers=2)):
        futures = [backend.submit(sum, range(n)) for n in (10, 20, 30)]
        assert [f.result(timeout=60) for f in futures] == [45, 190, 435]


def test_cancel_drops_what_has_not_started_and_stops_the_workers_of_what_has(tmp_path):
    backend = LocalBackend(workers=2)
    slow = [backend.submit(_sleeper(), (30.0, tmp_path)) for _ in range(8)]
    _wait_for(lambda: any(tmp_path.iterdir()))  # a worker has started one
    backend.cancel(slow)
    # every future ends: none is left running after its worker was killed
    running = wait(slow, timeout=20).not_done
    assert not running
    assert all(f.cancelled() or isinstance(f.exception(), ShutdownExecutorError)
               for f in slow)
    deadline = time.monotonic() + 20
    pids = [int(p.name) for p in tmp_path.iterdir()]
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    assert not pids, "workers that had started a cancelled task are still running"
    assert backend.submit(sum, range(4)).result(timeout=60) == 6  # a fresh pool after


def test_cancel_of_tasks_not_started_leaves_the_started_ones_running(tmp_path):
    backend = LocalBackend(workers=2)
    tasks = [backend.submit(_sleeper(), (1.5, tmp_path)) for _ in range(12)]
    _wait_for(lambda: len(list(tmp_path.iterdir())) == 2)  # both workers in their first task
    time.sleep(0.1)  # loky has queued what fits behind them
    started = [f for f in tasks if f.running()]
    waiting = [f for f in tasks if not f.running()]
    assert started and waiting
    backend.cancel(waiting)
    # one handed out between the look and the cancel (a loaded machine) runs to its end
    assert any(f.cancelled() for f in waiting)
    assert all(f.cancelled() or f.result(timeout=60) == 1.5 for f in waiting)
    assert [f.result(timeout=60) for f in started] == [1.5] * len(started)


def _sleeper():
    """A task that leaves its worker's pid in a folder, then sleeps. Defined in a function so
    that cloudpickle sends it by value: a worker cannot import this test module."""
    def sleep(task):
        seconds, where = task
        (where / str(os.getpid())).touch()
        time.sleep(seconds)
        return seconds

    return sleep


def _wait_for(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the workers did not start within a minute"
        time.sleep(0.01)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed worker the pool has not reaped yet is a zombie: it computes nothing
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow  # importing torch in two workers: ~10-30 s on 2 shared cores
def test_torch_imported_inside_a_local_worker_has_one_thread():
    info = list(LocalBackend(workers=2).map(worker_info, [{"import_torch": True}] * 2))
    assert all(i["torch"] == 1 for i in info), info


def test_ray_return_storage_writes_the_returned_files_on_the_driver(tmp_path):
    from stabfw.run.backends import ray_task, write_returned

    def fake_cell(task):  # what run_cell does: write files into task["dir"]
        from pathlib import Path

        (Path(task["dir"]) / "sub").mkdir(parents=True)
        (Path(task["dir"]) / "a.txt").write_text("A")
        (Path(task["dir"]) / "sub" / "b.bin").write_bytes(b"\x00\x01")
        return {"status": "done", "dir_seen": task["dir"]}

    target = tmp_path / "cells" / "x"
    out = ray_task(fake_cell, {"dir": str(target)}, "return")
    assert not target.exists()  # the worker wrote to scratch space only
    assert out["result"]["dir_seen"] != str(target)
    assert write_returned(out)["status"] == "done"
    assert (target / "a.txt").read_text() == "A"
    assert (target / "sub" / "b.bin").read_bytes() == b"\x00\x01"


def test_ray_backend_without_ray_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"stabfw\[distributed\]"):
        list(RayBackend().map(worker_info, [{}]))


def test_local_backend_gives_the_serial_numbers(tmp_path):
    run_sweep(_cfg(), tmp_path / "serial", backend="serial")
    res = run_sweep(_cfg(), tmp_path / "local", backend="local", workers=2)
    assert res.backend == "local" and not res.failed
    _assert_same(_cells(tmp_path / "serial"), _cells(tmp_path / "local"))


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow  # starting Ray takes 10-40 s on 2 shared cores
def test_ray_backend_gives_the_serial_numbers(tmp_path, local_ray):
    run_sweep(_cfg(), tmp_path / "serial", backend="serial")
    res = run_sweep(_cfg(), tmp_path / "ray", backend="ray")
    assert res.backend == "ray" and not res.failed, [r.error for r in res.results.values()]
    _assert_same(_cells(tmp_path / "serial"), _cells(tmp_path / "ray"))

    # workers that do not share the driver's disk send the files back instead
    tasks = [{"name": c.name, "config": c.config, "dir": str(tmp_path / "ret" / "cells" / c.name),
              "resume": False, "registration": None} for c in res.cells]
    from stabfw.experiments.sweep import run_cell

    out = list(RayBackend(storage="return").map(run_cell, tasks))
    assert {o["status"] for o in out} == {"done"}
    _assert_same(_cells(tmp_path / "serial"), _cells(tmp_path / "ret"))
    info = list(RayBackend().map(worker_info, [{"import_torch": True}]))
    assert info[0]["torch"] == 1 and info[0]["pid"] != os.getpid()
