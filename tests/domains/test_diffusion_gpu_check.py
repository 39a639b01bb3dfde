"""``benchmarks/gpu_diffusion_check.py --cpu-smoke``: the one-shot GPU script runs end to end
at toy size on CPU and leaves a complete JSON record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_diffusion_check.py"


def test_cpu_smoke_writes_every_stage(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_diffusion_check", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    torch.set_num_threads(1)
    out = tmp_path / "smoke.json"
    assert check.main(["--cpu-smoke", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    meta = d["meta"]
    assert meta["cpu_smoke"] and meta["device"] == "cpu" and meta["gpu"] is None
    assert meta["torch"] == torch.__version__ and isinstance(meta["cudnn_benchmark"], bool)
    stages = d["stages"]
    assert set(stages) == {"naive_train_b4", "naive_train_b8", "fast_train", "naive_sample",
                           "fast_sample_off", "inception"}
    for name in ("naive_train_b4", "naive_train_b8", "fast_train", "naive_sample",
                 "fast_sample_off"):
        st = stages[name]
        assert st["status"] == "done", st
        assert st["rate"] > 0 and st["iterations"] >= 2 and st["timed_s"] > 0
        assert st["rate"] == pytest.approx(st["iterations"] * st["batch"] / st["timed_s"],
                                           rel=1e-3)
        assert st["cudnn_benchmark"] == meta["cudnn_benchmark"]  # one setting for every path
    assert stages["inception"]["status"] in ("done", "skipped")
    r = d["ratios"]
    assert r["training_vs_naive_same_batch"] == pytest.approx(
        stages["fast_train"]["rate"] / stages["naive_train_b8"]["rate"], rel=1e-2)
    assert {"training_vs_naive_b4", "sampling_off_vs_naive"} <= set(r)
    assert meta["wall_s"] > 0
