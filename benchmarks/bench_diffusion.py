"""pytest-benchmark suite of the diffusion domain on CUDA (skipped without a GPU).

Each benchmark times the domain's loop and records, in ``extra_info``, its throughput and
the ratio to the naive fp32 eager loop measured in the same process at the same batch (the
stage functions of ``gpu_diffusion_check.py``).
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


def _rate(out) -> float:
    (timed, _warm, _one), batch = out[0], out[1]
    iters, secs = timed
    return iters * batch / secs


@pytest.fixture(scope="module")
def args():
    return check._parser().parse_args([])


@pytest.fixture(scope="module")
def naive(args):
    budget = check.Budget(600, floor=5)
    return {"train": _rate(check.naive_training(args, args.train_batch, budget)),
            "sample": _rate(check.naive_sampling(args, budget))}


def test_training_throughput(benchmark, naive, args):
    rate = benchmark.pedantic(lambda: _rate(check.fast_training(args, check.Budget(600, 5))),
                              rounds=1, iterations=1)
    benchmark.extra_info.update({
        "issue": 15, "ratio": round(rate / naive["train"], 2),
        "target": check.TARGETS["training"], "img_per_s": round(rate),
        "naive_img_per_s": round(naive["train"]),
        "note": "DDPM-CIFAR10 UNet; bf16 + channels_last + fused AdamW + compile + EMA vs "
                "fp32 eager, both at batch 512"})


def test_sampling_throughput(benchmark, naive, args):
    rate = benchmark.pedantic(
        lambda: _rate(check.fast_sampling(args, check.Budget(600, 5), "default")),
        rounds=1, iterations=1)
    benchmark.extra_info.update({
        "issue": 15, "ratio": round(rate / naive["sample"], 2),
        "target": check.TARGETS["sampling"], "evals_per_s": round(rate),
        "naive_evals_per_s": round(naive["sample"]),
        "note": "bf16 weights + channels_last + compile, batch 2048, vs fp32 eager batch 1024"})
