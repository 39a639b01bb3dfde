"""The reliability checklist (design/RELIABILITY_CHECKLIST.md), one test case per row.

Each row was a bad input or a fault that stabfw once met with a traceback, a silent wrong
number, a loss or a hang. Here each ends in a *clean refusal* — the documented exit code, a
message of at most 2 000 characters that names the problem and the fix, no traceback — or in
a *correct result*, compared with an uninterrupted run (byte for byte) or with what the
input implies. Rows P25, P28 and P29 (FixedPointAnalyzer arguments) are tested with the
fixed-point analyzer, not here. Rows ``X..`` are the issue's cases that have no checklist row.

The cases run in-process through :func:`stabfw.cli.main` where they can; Ctrl-C is then an
exception raised inside the loop. Real signals, killed processes and a second process are
the ``slow`` cases.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_loops import BernoulliCoin

import stabfw
from stabfw.cli import main
from stabfw.errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    LoopCheckError,
    LoopError,
    RunDirError,
)
from stabfw.run import registry
from stabfw.run.runner import CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
CHECKLIST = Path("/work/shared/design/RELIABILITY_CHECKLIST.md")
#: Rows of the checklist that other tests own.
ELSEWHERE = {"P25", "P28", "P29"}

G = ("domain: {name: gaussian, dim: 2, n: 20}\n"
     "loop: {policy: fixed_real, lam: 1.0, generations: 3, seeds: 2}\n"
     "output: {report: false, progress: false}\n")
# per-seed path, long enough to interrupt in the middle
GP = ("domain: {name: gaussian, dim: 2, n: 20}\n"
      "loop: {policy: fixed_real, lam: 1.0, generations: 12, seeds: 6, vectorize: never}\n"
      "output: {report: false, progress: false}\n")
GP_SEEDS, GP_STOP = 6, (9, 2)  # interrupted at generation 9 of seed 2


# --- helpers ------------------------------------------------------------------------------
@dataclass
class Result:
    rc: int
    out: str
    err: str


def cli(*args: str) -> Result:
    """``stabfw ARGS`` in this process; never a traceback, never more than 2 kB of error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    res = Result(rc, out.getvalue(), err.getvalue())
    assert "Traceback" not in res.out + res.err, res.err
    for line in res.err.split("\nstabfw "):
        assert len(line) <= 2000, f"message of {len(line)} characters"
    return res


def refused(res: Result, *needles: str, rc: int = 2) -> None:
    assert res.rc == rc, (res.rc, res.out, res.err)
    for n in needles:
        assert re.search(n, res.err), f"{n!r} not in {res.err!r}"


def write(tmp: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return path


def same_files(a: Path, b: Path, names=("metrics.csv", "params.npz")) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def interrupt_fit_at(monkeypatch, generation: int, seed_index: int, n_seeds: int) -> None:
    """Make the Gaussian's fit raise KeyboardInterrupt (Ctrl-C) at one seed and generation
    of a per-seed run."""
    from stabfw.domains.gaussian import GaussianLoop

    original = GaussianLoop.fit
    calls = {"n": 0}
    stop = generation * n_seeds + seed_index  # fits are generation-major, seeds in order

    def fit(self, data, init, rng):
        calls["n"] += 1
        if calls["n"] == stop + 1:
            raise KeyboardInterrupt
        return original(self, data, init, rng)

    monkeypatch.setattr(GaussianLoop, "fit", fit)


@pytest.fixture(scope="module")
def gp_runs(tmp_path_factory):
    """An uninterrupted reference run of GP and a run interrupted (Ctrl-C) at generation 9
    of seed 2, whose checkpoint the corruption cases copy."""
    root = tmp_path_factory.mktemp("gp")
    cfg = write(root, GP, "gp.yaml")
    ref, base = root / "ref", root / "base"
    assert cli("run", cfg, "--out", ref).rc == 0
    with pytest.MonkeyPatch.context() as mp:
        interrupt_fit_at(mp, *GP_STOP, GP_SEEDS)
        res = cli("run", cfg, "--out", base)
    return cfg, ref, base, res


def copy_base(gp_runs, tmp_path: Path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(gp_runs[2], d)
    return d


def flip(path: Path, seed: int) -> None:
    """flip.py of the checklist: one flipped bit in the middle 80 % of a file."""
    import random

    random.seed(seed)
    b = bytearray(path.read_bytes())
    i = random.randrange(len(b) // 10, len(b) * 9 // 10)
    b[i] ^= 0x10
    path.write_bytes(bytes(b))


def refused_then_restart(gp_runs, d: Path, *needles: str) -> None:
    """The corrupt checkpoint is refused naming the file and --restart; --restart then
    gives the uninterrupted run's results."""
    cfg, ref = gp_runs[0], gp_runs[1]
    refused(cli("run", cfg, "--out", d, "--resume"), *needles, "--restart")
    assert not (d / "metrics.csv").exists()
    assert cli("run", cfg, "--out", d, "--restart").rc == 0
    assert same_files(d, ref)


class Coin(BernoulliCoin):
    """The API sketch's coin (api_cases.py), and its broken variants below."""

    def __init__(self, n: int = 50, p_true: float = 0.3):
        super().__init__(n, p_true)


class NaNFit(Coin):
    def fit(self, data, init, rng):
        return float("nan")


class NaNLater(Coin):
    def fit(self, data, init, rng):
        return float("nan") if init is not None else float(np.mean(data))


class Boom(Exception):
    pass


class RaiseAt(Coin):
    """fit raises at one (generation, seed) of a 2-seed per-seed run while ``armed``."""

    def __init__(self, n: int = 50, p_true: float = 0.3, at: int = 3, seed_index: int = 1):
        super().__init__(n, p_true)
        self.at, self.seed_index = at, seed_index

    def fit(self, data, init, rng):
        self._calls = getattr(self, "_calls", 0) + 1
        if getattr(self, "_armed", True) and self._calls - 1 == self.at * 2 + self.seed_index:
            raise Boom("fit failed on purpose")
        return super().fit(data, init, rng)


class StrParams(Coin):
    def params(self, state):
        return np.array([f"{state:.3f}"])


class ComplexParams(Coin):
    def params(self, state):
        return np.array([state + 1j])


class WrongCount(Coin):
    def generate(self, state, n, rng):
        return (rng.random(n // 2) < state).astype(float)


class ZeroCount(Coin):
    def generate(self, state, n, rng):
        return np.empty(0)


class NaNSamples(Coin):
    def generate(self, state, n, rng):
        return np.full(n, np.nan)


class BadMetric(Coin):
    def metrics(self, state, rng):
        return {"m": "high"}


class ReservedMetric(Coin):
    def metrics(self, state, rng):
        return {"generation": 99.0}


class Unpicklable(Coin):
    def fit(self, data, init, rng):
        m = float(np.mean(data))
        return (m, lambda: m)

    def generate(self, state, n, rng):
        return (rng.random(n) < state[0]).astype(float)

    def params(self, state):
        return np.array([state[0]])

    def with_params(self, state, theta):
        return (float(theta[0]), state[1])


class FailingCoin(Coin):
    """A registered domain whose fit raises from generation ``fail_at`` on."""

    def __init__(self, n: int = 20, fail_at: int | None = None):
        self.n, self.p_true, self.fail_at = n, 0.3, fail_at

    def fit(self, data, init, rng):
        depth = 0 if init is None else init[1] + 1
        if self.fail_at is not None and depth >= self.fail_at:
            raise ArithmeticError("the fit failed on purpose")
        return (float(np.mean(data)), depth)

    def generate(self, state, n, rng):
        return (rng.random(n) < state[0]).astype(float)

    def params(self, state):
        return np.array([state[0]])

    def with_params(self, state, theta):
        return (float(theta[0]), state[1])


class NaNFromOne(FailingCoin):
    """θ becomes NaN from generation 1 (a diverging domain that says so with NaN)."""

    def fit(self, data, init, rng):
        depth = 0 if init is None else init[1] + 1
        return (float(np.mean(data)) if depth == 0 else math.nan, depth)


registry.register("failing_coin", FailingCoin, overwrite=True)
registry.register("nan_coin", NaNFromOne, overwrite=True)
RC = stabfw.RetrainConfig(lam=1.0, generations=4, seeds=2)


# --- config rows --------------------------------------------------------------------------
def v22(tmp):
    cfg = write(tmp, "domain: {name: gaussian, dim: 2, n: 20}\n"
                     "loop: {lam: 1, generations: 3, seeds: 2}\n"
                     "loop: {lam: 0, generations: 5, seeds: 2}\n")
    refused(cli("validate", cfg), "key 'loop' appears twice", r"lines 2 and 3")
    refused(cli("run", cfg, "--out", tmp / "r"), "appears twice")
    assert not (tmp / "r").exists()


def v22b(tmp):
    cfg = write(tmp, "domain: {name: gaussian, dim: 2, dim: 3, n: 20}\n"
                     "loop: {lam: 1, generations: 3, seeds: 2}\n")
    refused(cli("validate", cfg), "key 'dim' appears twice")


def _validate_and_run(tmp, text, *needles, sets=()):
    cfg = write(tmp, text)
    refused(cli("validate", cfg, *sets), *needles)
    refused(cli("run", cfg, "--out", tmp / "r", *sets), *needles)
    assert not (tmp / "r" / "metrics.csv").exists() and not (tmp / "r" / CHECKPOINT).exists()


def v28(tmp):
    _validate_and_run(tmp, G.replace("n: 20}", "n: 20, true_mean: [0, 0, 0]}"),
                      r"domain\.true_mean: must have length dim=2")


def v29(tmp):
    _validate_and_run(tmp, G.replace("n: 20}", "n: 20, true_cov: [[1, 2], [2, 1]]}"),
                      r"domain\.true_cov: must be symmetric positive definite")


def v30(tmp):
    _validate_and_run(tmp, G.replace("n: 20}", "n: 20, true_mean: [.nan, 0]}"),
                      r"domain\.true_mean: must be finite")


def v31(tmp):
    _validate_and_run(tmp, G, r"loop\.lam: expected a number, got a boolean",
                      sets=("--set", "loop.lam=true"))
    with pytest.raises(ValueError, match=r"lam: expected a number, got a boolean"):
        stabfw.RetrainConfig(lam=True)  # the class refuses it too (pydantic's ValidationError)
    refused(cli("validate", write(tmp, G), "--set", "domain.true_mean=[true, 0]"),
            r"domain\.true_mean\[0\]: expected a number")


def v33(tmp):
    t0 = time.perf_counter()
    refused(cli("validate", write(tmp, G), "--set", "loop.seeds=1000000000"),
            r"loop\.seeds", "memory")
    assert time.perf_counter() - t0 < 10  # at once: no list of 10⁹ seeds is built


def v33b(tmp):
    t0 = time.perf_counter()
    _validate_and_run(tmp, G, r"loop\.seeds.*memory",
                      sets=("--set", "loop.seeds=100000000", "--set", "loop.generations=100000"))
    assert time.perf_counter() - t0 < 10


def v34(tmp):
    _validate_and_run(tmp, G, r"loop\.lam: a finite λ must be ≤ 1e\+09", sets=("--set",
                                                                            "loop.lam=1e300"))
    # below the schema's cap but λ·n over the per-generation limit: refused with n known
    _validate_and_run(tmp, G, r"loop\.lam: λ = 9e\+08 with n = 20", sets=("--set",
                                                                        "loop.lam=9e8"))


def v40(tmp):
    _validate_and_run(tmp, G, r"loop\.synthetic_size is only used when λ is infinite",
                      sets=("--set", "loop.synthetic_size=1000"))
    ok = cli("validate", write(tmp, G), "--set", "loop.lam=.inf", "--set",
             "loop.synthetic_size=1000")
    assert ok.rc == 0, ok.err


def v41(tmp):
    seeds = [*range(100_000), 77]
    cfg = write(tmp, json.dumps({"domain": {"name": "gaussian", "dim": 2, "n": 20},
                                 "loop": {"lam": 1, "generations": 3, "seeds": seeds}}))
    res = cli("validate", cfg)
    refused(res, r"seed 77 appears at positions 77 and 100000")
    assert len(res.err) < 2000


def v42(tmp):
    bomb = "".join(f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for k, p in
                   zip("bcdefg", "abcdef"))
    cfg = write(tmp, "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + bomb +
                "domain: {name: gaussian, dim: 2, n: 20, true_mean: *g}\n"
                "loop: {lam: 1, generations: 3, seeds: 2}\n")
    res = cli("validate", cfg)
    refused(res, r"a: Extra inputs are not permitted")
    assert len(res.err) < 2000


FORECAST = textwrap.dedent("""\
    domain:
      name: forecasting
      dataset: lynx
      log: true
      holdout: 14
      forecaster: arima
      forecaster_params: {order: [2, 0, 0], trend: c}
      mode: extend
    loop: {policy: fixed_real, lam: 0.5, generations: 2, seeds: 2}
    output: {report: false, progress: false}
    """)


def v44(tmp):
    pytest.importorskip("sktime")
    _validate_and_run(tmp, FORECAST, r"domain\.holdout: must be ≥ 1, got -5",
                      sets=("--set", "domain.holdout=-5"))


def v45(tmp):
    pytest.importorskip("sktime")
    _validate_and_run(tmp, FORECAST, r"domain\.forecaster_params: .* no parameter 'bogus'",
                      sets=("--set", "domain.forecaster_params.bogus=1"))


def v46(tmp):
    _validate_and_run(tmp, "domain: {name: toy2d, dataset: two_moons, n: 64, layers: 2}\n"
                           "loop: {lam: 1.0, generations: 2, seeds: 2}\n"
                           "output: {report: false, progress: false}\n",
                      r"domain\.layers: must be ≥ 1, got -1", sets=("--set", "domain.layers=-1"))


def v47(tmp):
    _validate_and_run(tmp, G, r"loop\.curate: unknown hook 'nosuch_hook'; registered hooks: "
                              r".*top_fraction", sets=("--set", "loop.curate=nosuch_hook"))
    # a registered hook with an argument it refuses
    _validate_and_run(tmp, G, r"loop\.correct: hook 'self_correct': gamma must be",
                      sets=("--set", "loop.correct={name: self_correct, gamma: -1}"))


def v48(tmp):
    sets = ("--set", "analysis.fixed_point.metrics=[no_such_metric]")
    cfg = write(tmp, G)
    needle = r"(?s)analysis\.fixed_point\.metrics: no metric 'no_such_metric'.*cov_trace"
    if stabfw.make("gaussian").metric_info():  # declared: validate knows the names
        refused(cli("validate", cfg, *sets), needle)
        refused(cli("run", cfg, "--out", tmp / "r", *sets), needle)
        assert not (tmp / "r" / CHECKPOINT).exists()
    else:  # not declared: the run stops right after generation 0, before the others
        assert cli("validate", cfg, *sets).rc == 0
        refused(cli("run", cfg, "--out", tmp / "r", *sets), needle, "generation 0")
        assert sorted(p.name for p in (tmp / "r" / CHECKPOINT).glob("gen_*")) == [
            "gen_000000.npz"]


def s06(tmp):
    refused(cli("validate", write(tmp, G), "--set", "loop.lam=[1"),
            r"--set loop\.lam=\[1: not a YAML value")


def s07(tmp):
    refused(cli("validate", write(tmp, G), "--set", "loop.lam="),
            r"--set loop\.lam=: the value is empty.*null to unset")


def s14(tmp):
    res = cli("run", write(tmp, G), "--out", tmp / "t0")
    assert res.rc == 0 and "report" not in res.out
    assert not (tmp / "t0" / "report.html").exists()
    res = cli("run", write(tmp, G.replace("report: false", "report: true")), "--out", tmp / "t1")
    assert res.rc == 0 and f"report: {tmp / 't1' / 'report.html'}" in res.out
    assert (tmp / "t1" / "report.html").is_file()


SWEEP = G + "sweep:\n  grid:\n    loop.lam: [0.5, 1]\n"


def w10(tmp):
    cfg = write(tmp, SWEEP + "  stability: {axis: loop.nolam, quantity: final:cov_trace, "
                             "threshold: 1}\n")
    refused(cli("validate", cfg), r"sweep\.stability\.axis: 'loop\.nolam' is not swept")
    refused(cli("sweep", cfg, "--out", tmp / "w", "--backend", "serial"), "is not swept")


def w11(tmp):
    cfg = write(tmp, SWEEP + "  stability: {axis: loop.lam, quantity: final:nonexistent_metric,"
                             " threshold: 1}\n")
    needle = r"sweep\.stability\.quantity: no metric 'nonexistent_metric'"
    if stabfw.make("gaussian").metric_info():
        refused(cli("validate", cfg), needle)
    else:  # every cell stops after generation 0 with that message; the sweep fails
        assert cli("validate", cfg).rc == 0
        res = cli("sweep", cfg, "--out", tmp / "w", "--backend", "serial")
        refused(res, r"2 sweep cell\(s\) failed", needle, rc=1)
        assert not list((tmp / "w").rglob("metrics.csv"))


def w15(tmp):
    cfg = write(tmp, "domain: {name: failing_coin}\n"
                     "loop: {lam: 1.0, generations: 3, seeds: 2}\n"
                     "output: {report: false, progress: false}\n"
                     "sweep:\n  grid:\n    domain.fail_at: [null, 2]\n  backend: serial\n")
    res = cli("run", cfg, "--out", tmp / "sw")
    refused(res, r"1 sweep cell\(s\) failed", r"fail_at=2: FailingCoin\.fit at seed 0, "
                                              r"generation 2 raised ArithmeticError", rc=1)
    assert (tmp / "sw" / "cells" / "fail_at=None" / "metrics.csv").is_file()


# --- output directory rows ----------------------------------------------------------------
def o01(tmp):
    (tmp / "afile").write_text("hi\n")
    refused(cli("run", write(tmp, G), "--out", tmp / "afile"), r"afile is a file, not a directory")
    assert (tmp / "afile").read_text() == "hi\n"


def o02(tmp):
    (tmp / "afile").write_text("hi\n")
    refused(cli("run", write(tmp, G), "--out", tmp / "afile" / "sub"),
            r"cannot create .*afile/sub: .*afile is a file")


@contextlib.contextmanager
def immutable(path: Path, monkeypatch):
    """``chattr +i path`` where this machine allows it; else the same refusal simulated
    (``os.open``/``mkdir`` under ``path`` fail with EPERM, as chattr makes them)."""
    ok = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)],
                                                   capture_output=True).returncode == 0
    if not ok:
        real_open, real_mkdir = os.open, Path.mkdir

        def deny(p):
            return Path(p).resolve().parent == path.resolve() or Path(p).resolve() == path.resolve()

        def fake_open(p, *a, **k):
            if deny(p) and Path(p).resolve() != path.resolve():
                raise PermissionError(errno.EPERM, "Operation not permitted", str(p))
            return real_open(p, *a, **k)

        def fake_mkdir(self, *a, **k):
            if deny(self) and self.resolve() != path.resolve():
                raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
            return real_mkdir(self, *a, **k)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(Path, "mkdir", fake_mkdir)
    try:
        yield
    finally:
        if ok:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            monkeypatch.undo()


def o03(tmp, monkeypatch):
    (tmp / "immut").mkdir()
    cfg = write(tmp, G)
    with immutable(tmp / "immut", monkeypatch):
        refused(cli("run", cfg, "--out", tmp / "immut" / "x"),
                r"cannot create .*immut/x: Operation not permitted")


def o04(tmp, monkeypatch):
    (tmp / "immut2").mkdir()
    cfg = write(tmp, G)
    with immutable(tmp / "immut2", monkeypatch):
        refused(cli("run", cfg, "--out", tmp / "immut2"), r"immut2.*Operation not permitted")


def o05(tmp, monkeypatch, gp_runs):
    """Disk full at generation 6 (ENOSPC from the 13th checkpoint write): a clean stop that
    keeps generations 0–5; after space is freed, --resume gives the uninterrupted run."""
    import stabfw.run.checkpoint as ck

    cfg, ref = gp_runs[0], gp_runs[1]
    real, calls = ck.atomic_write, {"n": 0}

    def full(path, write):
        calls["n"] += 1
        if calls["n"] > 13:  # fingerprint, then block + state per generation: gen 6's block
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    monkeypatch.setattr(ck, "atomic_write", full)
    res = cli("run", cfg, "--out", tmp / "d01")
    refused(res, "No space left on device", r"generations 0–5 of every seed are kept",
            r"continue with: stabfw run .* --resume", rc=1)
    monkeypatch.setattr(ck, "atomic_write", real)
    assert cli("run", cfg, "--out", tmp / "d01", "--resume").rc == 0
    assert same_files(tmp / "d01", ref)


# --- data rows ------------------------------------------------------------------------------
def _data_case(tmp, make_file, *needles, extra=()):
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    path = make_file(data)
    _validate_and_run(tmp, G, *needles, sets=("--set", f"domain.data={path}", *extra))


def f08(tmp):
    def obj(d):
        np.save(d / "obj.npy", np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
        return d / "obj.npy"
    _data_case(tmp, obj, r"domain\.data: .*obj\.npy: holds Python objects \(dtype object\)")


def f09(tmp):
    def strings(d):
        np.save(d / "str.npy", np.array([["a", "b"], ["c", "d"]]))
        return d / "str.npy"
    _data_case(tmp, strings, r"domain\.data: .*str\.npy: holds <U1 values, not numbers")


def f12(tmp):
    def empty(d):
        (d / "empty.npy").write_bytes(b"")
        return d / "empty.npy"
    _data_case(tmp, empty, r"domain\.data: .*empty\.npy: the file is empty")


def f16(tmp):
    def garbage(d):
        (d / "bad.npy").write_bytes(os.urandom(256))
        return d / "bad.npy"
    _data_case(tmp, garbage, r"domain\.data: .*bad\.npy: not a \.npy file")


def f17(tmp):
    def csv5(d):
        np.savetxt(d / "ok5.csv", np.random.default_rng(0).normal(size=(30, 5)), delimiter=",")
        return d / "ok5.csv"
    _data_case(tmp, csv5, r"holds 30 points of dimension 5, but domain\.dim=2 and domain\.n=7",
               extra=("--set", "domain.dim=2", "--set", "domain.n=7"))


def f20(tmp):
    _validate_and_run(tmp, G, r"domain\.data \(inline\): must be rows of numbers",
                      sets=("--set", "domain.data=[[1,2],[3,x],[5,7]]"))


def f21(tmp):
    _validate_and_run(tmp, G, r"domain\.data: .*missing\.npy: no such file",
                      sets=("--set", f"domain.data={tmp / 'missing.npy'}"))


# --- Ctrl-C, kills, concurrency -----------------------------------------------------------
def k18(tmp, gp_runs):
    """Ctrl-C (a KeyboardInterrupt inside the loop): exit 130, the resume command, the
    checkpoint kept; resuming gives the uninterrupted run byte for byte."""
    cfg, ref, base, res = gp_runs
    g, s = GP_STOP
    refused(res, rf"interrupted at generation {g} of seed {s}",
            rf"generations 0–{g - 1} are checkpointed",
            rf"continue with: stabfw run {re.escape(str(cfg))} --out {re.escape(str(base))} "
            r"--resume", rc=130)
    d = copy_base(gp_runs, tmp)
    assert not (d / "metrics.csv").exists()
    assert cli("run", cfg, "--out", d, "--resume").rc == 0
    assert same_files(d, ref)


def _spawn(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stabfw.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path: Path, proc, timeout=120) -> bool:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    return proc.poll() is None


def k18_signal(tmp, gp_runs):
    """A real SIGINT to a running `stabfw run` (sigint.py of the checklist)."""
    cfg = write(tmp, GP.replace("generations: 12", "generations: 40").replace(
        "seeds: 6", "seeds: 60"))
    ref = tmp / "ref"
    assert cli("run", cfg, "--out", ref).rc == 0
    out = tmp / "sig"
    p = _spawn(["run", cfg, "--out", out], start_new_session=True)
    assert _wait_for(out / CHECKPOINT / "gen_000005.npz", p), "finished before the signal"
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert re.search(r"interrupted at generation \d+ of seed \d+; generations 0–\d+ are "
                     r"checkpointed .*; continue with: stabfw run .* --resume", err), err
    assert cli("run", cfg, "--out", out, "--resume").rc == 0
    assert same_files(out, ref)


SW = ("domain: {name: gaussian, dim: 2, n: 20}\n"
      "loop: {policy: fixed_real, generations: 25, seeds: 150, vectorize: never}\n"
      "output: {report: false, progress: false}\n"
      "sweep:\n  grid:\n    loop.lam: [0, 0.5, 1, 2]\n  backend: local\n  workers: 2\n")


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def k19(tmp):
    """Ctrl-C on a local-backend sweep: exit 130 with the resume command, no traceback, no
    worker left; the resumed sweep equals an uninterrupted one."""
    cfg = write(tmp, SW)
    out = tmp / "swint"
    p = _spawn(["sweep", cfg, "--out", out], start_new_session=True)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline and not list(
            out.glob("cells/*/checkpoint/gen_000008.npz")):
        time.sleep(0.01)
    kids = _descendants(p.pid)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "continue with: stabfw sweep" in err, err
    time.sleep(1.5)
    assert not [k for k in kids if _alive(k) and "loky" in _cmdline(k)]
    assert cli("sweep", cfg, "--out", out, "--resume", "--backend", "serial").rc == 0
    ref = tmp / "ref"
    assert cli("sweep", cfg, "--out", ref, "--backend", "serial").rc == 0
    for cell in ("lam=0", "lam=0.5", "lam=1", "lam=2"):
        assert same_files(out / "cells" / cell, ref / "cells" / cell)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def k20(tmp):
    """SIGKILL a local-backend sweep: its workers exit within seconds (no orphans writing
    cells), and --resume at once gives the uninterrupted sweep's cells."""
    cfg = write(tmp, SW)
    out = tmp / "swk"
    p = _spawn(["sweep", cfg, "--out", out], start_new_session=True)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline and not list(
            out.glob("cells/*/checkpoint/gen_000010.npz")):
        time.sleep(0.01)
    kids = [k for k in _descendants(p.pid) if "loky" in _cmdline(k) or "python" in _cmdline(k)]
    assert kids, "no workers seen"
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while [k for k in kids if _alive(k)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "workers outlived the killed sweep"
    assert cli("sweep", cfg, "--out", out, "--resume").rc == 0
    ref = tmp / "ref"
    assert cli("sweep", cfg, "--out", ref, "--backend", "serial").rc == 0
    for cell in ("lam=0", "lam=0.5", "lam=1", "lam=2"):
        assert same_files(out / "cells" / cell, ref / "cells" / cell)


# --- checkpoint rows ------------------------------------------------------------------------
def c01(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    with open(d / CHECKPOINT / "state.pkl", "r+b") as f:
        f.truncate(100)
    refused_then_restart(gp_runs, d, r"checkpoint/state\.pkl is truncated")


def c02(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    (d / CHECKPOINT / "state.pkl").write_bytes(b"")
    refused_then_restart(gp_runs, d, r"checkpoint/state\.pkl is empty")


def c03(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    with open(d / CHECKPOINT / "gen_000005.npz", "r+b") as f:
        f.truncate(3000)
    refused_then_restart(gp_runs, d, r"checkpoint/gen_000005\.npz cannot be read")


def c04(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    (d / CHECKPOINT / "gen_000005.npz").unlink()
    refused_then_restart(gp_runs, d, r"checkpoint/gen_000005\.npz is missing")


def c05(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    (d / CHECKPOINT / "state.pkl").write_text("not a pickle\n")
    refused_then_restart(gp_runs, d, r"checkpoint/state\.pkl is not a stabfw checkpoint state")


def c06(tmp, gp_runs):
    """A state that claims generation 40 (header and checksum made consistent)."""
    from stabfw.run import checkpoint as ck

    d = copy_base(gp_runs, tmp)
    path = d / CHECKPOINT / "state.pkl"
    raw = path.read_bytes()[len(ck._MAGIC):]
    head, _, payload = raw.partition(b"\n")
    state = pickle.loads(payload)
    state["generation"] = 40
    payload = pickle.dumps(state)
    header = {**json.loads(head), "generation": 40, "size": len(payload),
              "sha256": __import__("hashlib").sha256(payload).hexdigest()}
    path.write_bytes(ck._MAGIC + json.dumps(header).encode() + b"\n" + payload)
    refused_then_restart(gp_runs, d, r"checkpoint/gen_000009\.npz is missing")


def c08(tmp, gp_runs):
    """One flipped bit in a journal block (3 trials): refused, or (a bit the file's
    checks do not cover and the numbers do not use) a result identical to the reference."""
    for trial in (1, 2, 3):
        d = copy_base(gp_runs, tmp / str(trial))
        flip(d / CHECKPOINT / "gen_000007.npz", trial)
        res = cli("run", gp_runs[0], "--out", d, "--resume")
        if res.rc == 0:
            assert same_files(d, gp_runs[1])
        else:
            refused(res, r"checkpoint/gen_000007\.npz", "--restart")


def c09(tmp, gp_runs):
    """One flipped bit in state.pkl (8 trials): refused every time, never wrong numbers."""
    for trial in range(4, 12):
        d = copy_base(gp_runs, tmp / str(trial))
        flip(d / CHECKPOINT / "state.pkl", trial)
        res = cli("run", gp_runs[0], "--out", d, "--resume")
        if res.rc == 0:
            assert same_files(d, gp_runs[1])
        else:
            refused(res, r"checkpoint/state\.pkl", "--restart")


# --- resume and concurrency -----------------------------------------------------------------
def r07(tmp):
    cfg = write(tmp, G)
    d = tmp / "R07"
    assert cli("run", cfg, "--out", d).rc == 0
    before = {n: (d / n).read_bytes() for n in ("metrics.csv", "params.npz", "summary.json")}
    refused(cli("run", cfg, "--out", d, "--resume", "--set", "loop.lam=0.0"),
            r"holds a finished run of another configuration", r"loop\.lam: 1\.0 there, 0\.0 now",
            "--force")
    refused(cli("run", cfg, "--out", d), r"holds this run, finished already.*--resume")
    res = cli("run", cfg, "--out", d, "--resume")
    assert res.rc == 0 and "finished already for the same configuration; nothing to do" in res.out
    assert {n: (d / n).read_bytes() for n in before} == before
    assert cli("run", cfg, "--out", d, "--force", "--set", "loop.lam=0.0").rc == 0
    assert pd.read_csv(d / "metrics.csv")["n_synthetic"].max() == 0


def _gd(tmp, data: Path) -> Path:
    return write(tmp, f"domain: {{name: gaussian, data: {data}}}\n"
                      "loop: {policy: fixed_real, lam: 1.0, generations: 12, seeds: 6, "
                      "vectorize: never}\noutput: {report: false, progress: false}\n", "gd.yaml")


def r08(tmp, monkeypatch):
    data = tmp / "big.npy"
    X = np.random.default_rng(3).normal(size=(40, 2))
    np.save(data, X)
    cfg = _gd(tmp, data)
    interrupt_fit_at(monkeypatch, 9, 2, 6)
    assert cli("run", cfg, "--out", tmp / "R08").rc == 130
    monkeypatch.undo()
    X[:, 0] += 5
    np.save(data, X)
    refused(cli("run", cfg, "--out", tmp / "R08", "--resume"),
            rf"the data file {re.escape(str(data))} changed", "--restart")
    assert not (tmp / "R08" / "metrics.csv").exists()


def _hold_lock(d: Path):
    code = ("import sys, time; from stabfw.run.rundir import RunLock; "
            f"l = RunLock({str(d)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def cc2(tmp, caplog):
    """A second run into a directory another process writes is refused, naming that process;
    once the writer is killed, its stale lock is explained and taken over."""
    cfg, d = write(tmp, G), tmp / "CC2"
    d.mkdir()
    holder = _hold_lock(d)
    try:
        refused(cli("run", cfg, "--out", d), rf"is in use by another stabfw run: pid {holder.pid} "
                                            r"on host .*started")
        assert not (d / "metrics.csv").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with caplog.at_level("WARNING"):
        assert cli("run", cfg, "--out", d).rc == 0
    assert re.search(rf"lock of an earlier run \(pid {holder.pid} .*ended without releasing it "
                     r"\(killed or crashed\)", caplog.text)
    assert not (d / ".stabfw.lock").exists()


def cc3(tmp, monkeypatch):
    """Blocks of a λ = 1 run spliced into a λ = 0 run's checkpoint (what two writers once
    left): the resume is refused, naming the foreign block."""
    cfg = write(tmp, GP)
    interrupt_fit_at(monkeypatch, 9, 2, GP_SEEDS)
    assert cli("run", cfg, "--out", tmp / "one").rc == 130
    monkeypatch.undo()
    interrupt_fit_at(monkeypatch, 6, 0, GP_SEEDS)
    assert cli("run", cfg, "--out", tmp / "zero", "--set", "loop.lam=0").rc == 130
    monkeypatch.undo()
    for t in (3, 4, 5):
        name = f"gen_{t:06d}.npz"
        shutil.copy(tmp / "one" / CHECKPOINT / name, tmp / "zero" / CHECKPOINT / name)
    refused(cli("run", cfg, "--out", tmp / "zero", "--resume", "--set", "loop.lam=0"),
            r"checkpoint/gen_000003\.npz was written by a different run", "--restart")


# --- analyze rows ---------------------------------------------------------------------------
def a03(tmp):
    """analyze a run whose θ is NaN from generation 1: the run says so, and analyze gives a
    verdict of divergence or a clean error naming the non-finite θ."""
    cfg = write(tmp, "domain: {name: nan_coin}\n"
                     "loop: {lam: 1.0, generations: 4, seeds: 3, on_nonfinite: record}\n"
                     "output: {report: false, progress: false}\n")
    d = tmp / "r30"
    res = cli("run", cfg, "--out", d)
    assert res.rc == 0
    assert re.search(r"warning: non-finite values in 3 seed\(s\).*theta at seed 0, generation 1",
                     res.err), res.err
    summary = json.loads((d / "summary.json").read_text())
    assert summary["nonfinite"]["n_seeds"] == 3 and summary["nonfinite"]["first"]["generation"] == 1
    res = cli("analyze", d, "--no-report")
    if res.rc == 0:
        assert "diverging" in res.out
    else:  # the Jacobian at a NaN θ* fails: named, with the way to the verdict alone
        refused(res, r"non-finite from generation 1 in 3 of 3 seeds",
                r"--set analysis\.jacobian=false", rc=1)
        res = cli("analyze", d, "--no-report", "--set", "analysis.jacobian=false")
        assert res.rc == 0 and "diverging" in res.out and "generation 1" in res.out


def a08(tmp):
    cfg = write(tmp, G)
    assert cli("run", cfg, "--out", tmp / "t0").rc == 0
    (tmp / "t0" / "metrics.csv").write_text("garbage,\n1,2,3\n")
    refused(cli("analyze", tmp / "t0"), r"metrics\.csv does not match the checksum")


def a09(tmp):
    cfg = write(tmp, G)
    assert cli("run", cfg, "--out", tmp / "t0").rc == 0
    raw = (tmp / "t0" / "params.npz").read_bytes()
    (tmp / "t0" / "params.npz").write_bytes(raw[:100])
    refused(cli("analyze", tmp / "t0"), r"params\.npz does not match the checksum")
    # without a manifest (a file from elsewhere) the damage is still named, not a traceback
    (tmp / "t0" / "manifest.json").unlink()
    refused(cli("analyze", tmp / "t0"), r"params\.npz cannot be read \(BadZipFile")


# --- Python API rows ------------------------------------------------------------------------
def p01(tmp, caplog):
    problems = stabfw.core.checks.loop_problems(NaNFit())
    assert any("non-finite" in p for p in problems)
    assert not any("not deterministic" in p for p in problems)
    with caplog.at_level("WARNING"):
        traj = stabfw.run_loop(NaNFit(), RC)
    assert [(e["seed"], e["generation"], e["action"]) for e in traj.events] == [
        (0, 0, "stopped"), (1, 0, "stopped")]
    assert np.isnan(traj.params).all()
    assert "non-finite values in 2 seed(s)" in caplog.text
    assert "non-finite values in 2 seed(s)" in traj.summary()["nonfinite"]["text"]


def p02(tmp):
    traj = stabfw.run_loop(NaNLater(), RC, out_dir=tmp / "p02")
    assert {(e["seed"], e["generation"]) for e in traj.events} == {(0, 1), (1, 1)}
    assert np.isfinite(traj.params[:, 0]).all() and np.isnan(traj.params[:, 1:]).all()
    # stopped seeds are not computed further: their later rows are NaN, recorded as such
    assert np.isnan(traj.metrics.loc[traj.metrics.generation > 1, "n_synthetic"]).all()
    back = stabfw.Trajectory.load(tmp / "p02")
    assert back.events == traj.events
    rec = stabfw.run_loop(NaNLater(), RC.model_copy(update={"on_nonfinite": "record"}))
    assert [e["action"] for e in rec.events] == ["recorded", "recorded"]
    assert (rec.metrics.loc[rec.metrics.generation > 0, "n_synthetic"] == 50).all()


def p03(tmp):
    cfg = stabfw.RetrainConfig(lam=1.0, generations=5, seeds=2, vectorize="never")
    with pytest.raises(GenerationError) as info:
        stabfw.run_loop(RaiseAt(), cfg, out_dir=tmp / "p03")
    err = info.value
    assert (err.seed, err.generation, err.method) == (1, 3, "fit")
    assert "RaiseAt.fit at seed 1, generation 3 raised Boom: fit failed on purpose" in str(err)
    assert isinstance(err.__cause__, Boom) and err.checkpoint == tmp / "p03"
    assert err.trajectory.params.shape == (2, 3, 1)
    loop = RaiseAt()
    loop._armed = False  # not a parameter: the same fingerprint, and it no longer fails
    resumed = stabfw.run_loop(loop, cfg, out_dir=tmp / "p03", resume=True)
    ref = stabfw.run_loop(Coin(), cfg)
    np.testing.assert_array_equal(resumed.params, ref.params)
    assert resumed.meta["resumed_from_generation"] == 2


def p04(tmp):
    cfg = stabfw.RetrainConfig(lam=1.0, generations=5, seeds=2, vectorize="never")
    with pytest.raises(GenerationError) as info:
        stabfw.run_loop(RaiseAt(), cfg)
    ref = stabfw.run_loop(Coin(), cfg)
    part = info.value.trajectory
    np.testing.assert_array_equal(part.params, ref.params[:, :3])
    pd.testing.assert_frame_equal(part.metrics.reset_index(drop=True),
                                  ref.metrics[ref.metrics.generation < 3].reset_index(drop=True))
    assert info.value.checkpoint is None


def _loop_error(loop, *needles, out_dir=None):
    with pytest.raises(LoopError) as info:
        stabfw.run_loop(loop, RC, out_dir=out_dir)
    for n in needles:
        assert re.search(n, str(info.value)), str(info.value)
    return info.value


def p07(tmp):
    _loop_error(StrParams(), r"StrParams\.theta at seed 0, generation 0 returned a θ that must "
                             r"be a float vector, got dtype <U5")


def p08(tmp):
    _loop_error(ComplexParams(), r"ComplexParams\.theta at seed 0, generation 0 .*complex")


def p10(tmp):
    e = _loop_error(WrongCount(), r"WrongCount\.generate\(state, 50, rng\) returned 25 samples "
                                  r"at seed 0, generation 1")
    assert e.method == "generate"


def p11(tmp):
    _loop_error(ZeroCount(), r"returned 0 samples at seed 0, generation 1")


def p12(tmp):
    traj = stabfw.run_loop(NaNSamples(), RC)
    assert [(e["seed"], e["generation"], e["what"]) for e in traj.events] == [
        (0, 1, ["theta"]), (1, 1, ["theta"])]


def p13(tmp):
    _loop_error(BadMetric(), r"BadMetric\.metrics at seed 0, generation 0: metrics\['m'\] = "
                             r"'high' is not a number")


def p14(tmp):
    _loop_error(ReservedMetric(), r"metrics key 'generation' is reserved for the runner")


def p15(tmp):
    e = _loop_error(Unpicklable(), r"the fitted state cannot be pickled at generation 0",
                    r"checkpoints need it", out_dir=tmp / "p15")
    assert e.trajectory is None
    assert stabfw.run_loop(Unpicklable(), RC).params.shape == (2, 5, 1)  # no checkpoint: fine


def p18(tmp):
    class Duck:
        def real_data(self, rng):
            return np.zeros(3)

    with pytest.raises(LoopCheckError, match=r"must subclass stabfw\.SelfConsumingLoop "
                                             r"\(missing methods: fit, generate, theta\)"):
        stabfw.run_loop(Duck(), RC)


# --- the cases without a checklist row ----------------------------------------------
def x01_impossible_policies(tmp):
    refused(cli("validate", write(tmp, G), "--set", "loop.lam=.inf", "--set",
                "loop.policy=accumulate"), r"loop\.lam=\.inf contradicts policy 'accumulate'")
    refused(cli("validate", write(tmp, G), "--set", "loop.lam=1", "--set",
                "loop.policy=fully_synthetic"), r"contradicts policy 'fully_synthetic'")
    with pytest.raises(ConfigError, match="contradicts"):
        stabfw.run_loop(Coin(), RC.model_copy(update={"policy": "fully_synthetic"}))


def x02_umask(tmp):
    old = os.umask(0o022)
    try:
        assert cli("run", write(tmp, G.replace("report: false", "report: true")),
                   "--out", tmp / "a").rc == 0
        os.umask(0o027)
        assert cli("run", write(tmp, G), "--out", tmp / "b").rc == 0
    finally:
        os.umask(old)
    for name in ("params.npz", "metrics.csv", "config.yaml", "summary.json", "manifest.json",
                 "report.html"):
        assert (tmp / "a" / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp / "b" / "metrics.csv").stat().st_mode & 0o777 == 0o640


def x03_tmp_files_cleaned(tmp, gp_runs):
    d = copy_base(gp_runs, tmp)
    left = [d / ".metrics.csv.k2j4h1.tmp", d / CHECKPOINT / ".state.pkl.a8f.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    assert cli("run", gp_runs[0], "--out", d, "--resume").rc == 0
    assert not any(p.exists() for p in left)
    assert same_files(d, gp_runs[1])


def x04_effective_lambda(tmp):
    def half(batch, *, state, loop, rng, real):
        return batch[: batch.shape[0] // 2]

    traj = stabfw.run_loop(Coin(), stabfw.RetrainConfig(lam=1.0, generations=3, seeds=2,
                                                        curate=half))
    lam = traj.metric("lam_effective")
    np.testing.assert_array_equal(lam[:, 0], 0.0)
    np.testing.assert_array_equal(lam[:, 1:], 0.5)  # 25 of 50 synthetic points kept
    assert traj.summary()["metrics"]["lam_effective"]["final_mean"] == 0.5
    full = stabfw.run_loop(Coin(), stabfw.RetrainConfig(lam=math.inf, generations=2, seeds=1))
    assert np.isinf(full.metric("lam_effective")[:, 1:]).all()


def x05_class_api_validates(tmp):
    with pytest.raises(ConfigError, match=r"loop\.lam"):
        stabfw.run_loop(Coin(), RC.model_copy(update={"lam": -1.0}))  # model_copy skips pydantic
    with pytest.raises(ConfigError, match="resume must be True or False"):
        stabfw.run_loop(Coin(), RC, resume="yes")
    from stabfw.domains.gaussian import GaussianLoop

    with pytest.raises(ConfigError, match=r"domain\.true_mean: must have length dim=2"):
        stabfw.run_loop(GaussianLoop(dim=2, true_mean=[0, 0, 0]), RC)
    with pytest.raises(ConfigError, match=r"domain\.dim: Input should be greater than or equal"):
        stabfw.run_loop(GaussianLoop(dim=0), RC)


def x06_exit_codes_documented(tmp):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(out.getvalue().split())
    for code in ("0 success", "1 the run failed", "2 refused before any work",
                 "130 interrupted", "--debug"):
        assert code in text


def x07_finished_api_run(tmp):
    d = tmp / "api"
    first = stabfw.run_loop(Coin(), RC, out_dir=d)
    with pytest.raises(RunDirError, match="finished already"):
        stabfw.run_loop(Coin(), RC, out_dir=d)
    again = stabfw.run_loop(Coin(), RC, out_dir=d, resume=True)
    assert again.meta["already_finished"]
    np.testing.assert_array_equal(again.params, first.params)
    with pytest.raises(RunDirError, match=r"another configuration:\n  loop\.lam: 1\.0 there"):
        stabfw.run_loop(Coin(), RC.model_copy(update={"lam": 2.0}), out_dir=d, resume=True)
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        (d / "params.npz").write_bytes(b"x" + (d / "params.npz").read_bytes()[1:])
        stabfw.Trajectory.load(d)


def x08_vectorised_stop(tmp):
    """on_nonfinite on the vectorised path: the seed stops (NaN θ and rows from then on),
    the other seeds are untouched."""
    from stabfw.domains.gaussian import GaussianLoop

    class Blowup(GaussianLoop):
        # the covariance of seed index 1 becomes NaN at generation 2
        def step_batch(self, batch, seeds, generation, config):
            out = super().step_batch(batch, seeds, generation, config)
            if generation == 2:
                out["cov"] = out["cov"].copy()
                out["cov"][1] = np.nan
            return out

    cfg = stabfw.RetrainConfig(lam=1.0, generations=4, seeds=3)
    vec = stabfw.run_loop(Blowup(dim=2, n=20), cfg)
    plain = stabfw.run_loop(GaussianLoop(dim=2, n=20), cfg)
    assert vec.meta["path"] == "vectorized"
    assert [(e["seed"], e["generation"], e["action"]) for e in vec.events] == [(1, 2, "stopped")]
    assert np.isnan(vec.params[1, 2]).any() and np.isnan(vec.params[1, 3:]).all()
    np.testing.assert_array_equal(vec.params[[0, 2]], plain.params[[0, 2]])
    np.testing.assert_array_equal(vec.params[1, :2], plain.params[1, :2])
    later = vec.metrics[(vec.metrics.seed == 1) & (vec.metrics.generation > 2)]
    assert later.drop(columns=["seed", "generation"]).isna().all().all()


def x09_debug_shows_the_traceback(tmp):
    cfg = write(tmp, G)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--debug", "validate", str(cfg), "--set", "loop.lam=true"])
    assert rc == 2 and "Traceback" in err.getvalue() and "loop.lam" in err.getvalue()
    refused(cli("validate", cfg, "--set", "loop.lam=true"), "loop.lam")  # and without: none


class GrowParams(Coin):
    def fit(self, data, init, rng):
        return (float(np.mean(data)), 0 if init is None else init[1] + 1)

    def generate(self, state, n, rng):
        return (rng.random(n) < state[0]).astype(float)

    def params(self, state):
        return np.full(1 + (state[1] >= 2), state[0])

    def with_params(self, state, theta):
        return (float(theta[0]), state[1])


def x10_theta_length_and_hooks(tmp):
    e = _loop_error(GrowParams(), r"GrowParams\.theta at seed 0, generation 2: θ changed length "
                                  r"from 1 \(generation 0\) to 2")
    assert e.trajectory.params.shape == (2, 2, 1)

    def bad_hook(batch):  # not (batch, *, state, loop, rng, real)
        return batch

    with pytest.raises(ConfigError, match=r"loop\.curate: hook .*bad_hook cannot be called"):
        stabfw.run_loop(Coin(), stabfw.RetrainConfig(generations=2, seeds=1, curate=bad_hook))
    with pytest.raises(ConfigError, match=r"loop\.curate: unknown hook 'nope'"):
        stabfw.run_loop(Coin(), stabfw.RetrainConfig(generations=2, seeds=1, curate="nope"))


def x11_lock_threads(tmp):
    """The run-directory lock: re-entrant in its thread, refused to another thread."""
    import threading

    from stabfw.run.rundir import RunLock

    errors = []
    with RunLock(tmp), RunLock(tmp):  # nested in one thread: fine
        t = threading.Thread(target=lambda: errors.append(_try_lock(tmp)))
        t.start()
        t.join()
        assert (tmp / ".stabfw.lock").is_file()
    assert "another run in this process" in errors[0]
    assert not (tmp / ".stabfw.lock").exists()


def _try_lock(d):
    from stabfw.run.rundir import RunLock

    try:
        RunLock(d).acquire()
    except RunDirError as err:
        return str(err)
    return "acquired"


ROWS = {
    "V22": v22, "V22b": v22b, "V28": v28, "V29": v29, "V30": v30, "V31": v31, "V33": v33,
    "V33b": v33b, "V34": v34, "V40": v40, "V41": v41, "V42": v42, "V44": v44, "V45": v45,
    "V46": v46, "V47": v47, "V48": v48, "S06": s06, "S07": s07, "S14": s14, "W10": w10,
    "W11": w11, "W15": w15, "O01": o01, "O02": o02, "O03": o03, "O04": o04, "O05": o05,
    "F08": f08, "F09": f09, "F12": f12, "F16": f16, "F17": f17, "F20": f20, "F21": f21,
    "K18": k18, "K18-signal": k18_signal, "K19": k19, "K20": k20, "C01": c01, "C02": c02,
    "C03": c03, "C04": c04, "C05": c05, "C06": c06, "C08": c08, "C09": c09, "R07": r07,
    "R08": r08, "CC2": cc2, "CC3": cc3, "A03": a03, "A08": a08, "A09": a09, "P01": p01,
    "P02": p02, "P03": p03, "P04": p04, "P07": p07, "P08": p08, "P10": p10, "P11": p11,
    "P12": p12, "P13": p13, "P14": p14, "P15": p15, "P18": p18,
    "X01": x01_impossible_policies, "X02": x02_umask, "X03": x03_tmp_files_cleaned,
    "X04": x04_effective_lambda, "X05": x05_class_api_validates,
    "X06": x06_exit_codes_documented, "X07": x07_finished_api_run,
    "X08": x08_vectorised_stop, "X09": x09_debug_shows_the_traceback,
    "X10": x10_theta_length_and_hooks, "X11": x11_lock_threads,
}
SLOW = {"K18-signal", "K19", "K20"}


@pytest.mark.parametrize("row", [pytest.param(r, id=r, marks=[pytest.mark.slow] if r in SLOW
                                              else []) for r in ROWS])
def test_checklist(row, tmp_path, request):
    case = ROWS[row]
    import inspect

    kwargs = {name: request.getfixturevalue(name if name != "tmp" else "tmp_path")
              for name in inspect.signature(case).parameters}
    if "tmp" in kwargs:
        kwargs["tmp"] = tmp_path
    case(**kwargs)


def test_every_checklist_row_has_a_case():
    if not CHECKLIST.is_file():
        pytest.skip(f"{CHECKLIST} is not on this machine")
    rows = set(re.findall(r"^\| ([A-Z]+\d+b?) \|", CHECKLIST.read_text(), re.M))
    assert rows - ELSEWHERE - set(ROWS) == set()
    assert ELSEWHERE <= rows
