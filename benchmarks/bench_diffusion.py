"""pytest-benchmark suite of the diffusion domain on CUDA (skipped without a GPU).

Each benchmark times the domain's loop and records, in ``extra_info``, its throughput and
the ratio to the naive fp32 eager loop measured in the same process (the naive loops and
the ratios are those of ``gpu_diffusion_check.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_diffusion_check as check  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPE = ("ddpm-cifar10", 3, 32, "cuda")


@pytest.fixture(scope="module")
def naive():
    return {"train": check.naive_training(*SHAPE, batch=128, steps=20),
            "sample": check.naive_sampling(*SHAPE, batch=1024, steps=10)}


def test_training_throughput(benchmark, naive):
    rate, compile_s = benchmark.pedantic(
        lambda: check.optimized_training(*SHAPE, batch=512, steps=30), rounds=1, iterations=1)
    benchmark.extra_info.update({
        "issue": 8, "ratio": round(rate / naive["train"], 2), "target": check.TARGETS["training"],
        "img_per_s": round(rate), "naive_img_per_s": round(naive["train"]),
        "compile_s": round(compile_s, 1),
        "note": "DDPM-CIFAR10 UNet; bf16 + channels_last + fused AdamW + compile + EMA, batch "
                "512, vs fp32 eager batch 128"})


def test_sampling_throughput(benchmark, naive):
    rate, compile_s = benchmark.pedantic(
        lambda: check.optimized_sampling(*SHAPE, batch=2048, steps=35), rounds=1, iterations=1)
    benchmark.extra_info.update({
        "issue": 8, "ratio": round(rate / naive["sample"], 2), "target": check.TARGETS["sampling"],
        "evals_per_s": round(rate), "naive_evals_per_s": round(naive["sample"]),
        "compile_s": round(compile_s, 1),
        "note": "DDIM-35; bf16 weights + channels_last + compile, batch 2048, vs fp32 eager "
                "batch 1024"})
