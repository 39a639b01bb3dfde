"""The diffusion domain's GPU check: one shot, inside a time budget, JSON after every stage.

Run on a CUDA machine (see docs/diffusion.md, "Running the GPU check", for the command that
installs the carried wheels first)::

    python benchmarks/gpu_diffusion_check.py --json results.json --budget-s 480
    python benchmarks/gpu_diffusion_check.py --cpu-smoke --json smoke.json   # seconds, CPU

Stages, in this order, on the DDPM-CIFAR10 UNet (35.7 M parameters) and random 32×32×3
images (no data set needed); ``torch.backends.cudnn.benchmark`` is set once, the same for
every stage (recorded in the JSON):

1. ``naive_train_b128`` / ``naive_train_bN``: a plain diffusers loop — fp32 eager,
   ``torch.optim.AdamW``, ``DDPMScheduler.add_noise``, no EMA — at batch 128 and at the
   fast path's batch N;
2. ``fast_train``: the domain's ``training.train`` (bf16 autocast, channels_last, fused
   AdamW, ``torch.compile``, EMA) at batch N;
3. ``naive_sample``: fp32 eager DDIM through diffusers;
4. ``fast_sample_default`` and ``fast_sample_reduce_overhead``: the domain's sampling net
   (bf16 weights, channels_last, compiled; the second with CUDA graphs). Both are
   reported; neither is chosen for the other;
5. ``inception``: FID feature extraction timed on torchvision's Inception-v3 architecture
   with random weights (``weights=None``: the FID network's compute, not its values; the
   real 87 MB FID file cannot travel to the GPU machine), at 299×299, plus one 2048-d
   Fréchet distance;
6. ``generation`` (``--full-generation``): one CIFAR-size generation of the domain loop
   (50k images fine-tuned, 50k sampled at DDIM-``--sample-steps``), on random data.

Every stage first runs a short warm-up (which compiles), measures one iteration, and
fits its timed iterations into the budget left; a stage whose warm-up estimate does not
fit is skipped with the reason in the JSON. ``--json PATH`` is rewritten atomically after
every stage, so a run killed at its limit still leaves every finished stage on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"training": 4.7, "sampling": 5.0, "generation_seconds": 120.0}
# Rough first-call costs on an H200 (GPU_BASELINE.md): what a stage needs before its
# own warm-up can measure anything; a stage is skipped when less than this is left.
PRIOR_S = {"naive_train": 10.0, "fast_train": 100.0, "naive_sample": 10.0,
           "fast_sample": 45.0, "inception": 20.0, "generation": 150.0}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _log(msg: str) -> None:
    print(msg, flush=True)


class Report:
    """The JSON record: metadata, then one entry per stage, rewritten after each."""

    def __init__(self, path: str | None, meta: dict):
        self.path = Path(path) if path else None
        self.data = {"meta": meta, "stages": {}, "ratios": {}}
        self.write()

    def stage(self, name: str, entry: dict) -> None:
        self.data["stages"][name] = entry
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)  # atomic: a reader never sees half a file


class Budget:
    def __init__(self, seconds: float, floor: int = 0):
        self.t0 = time.perf_counter()
        self.seconds = seconds
        self.floor = floor  # --cpu-smoke: always time this many iterations

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


def random_images(n: int, channels: int, size: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, device=device,
                         dtype=torch.uint8)


def build(preset: str, channels: int, size: int):
    from stabfw.domains.diffusion.models import build_unet

    return build_unet(preset, channels, size)


def _timed(step, sync, budget: Budget, share: float, max_iters: int, min_iters: int = 2):
    """Warm up (compiles), time one call, then as many calls as fit ``share`` of the
    budget left (at most ``max_iters``). Returns (iterations, seconds, warm-up seconds,
    seconds of one call) or None when even ``min_iters`` do not fit."""
    t0 = time.perf_counter()
    step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()
    sync()
    one = time.perf_counter() - t0
    iters = min(max_iters, int(max(budget.left(), 0.0) * share / max(one, 1e-9)))
    iters = max(iters, budget.floor)
    if iters < min_iters:
        return None, warm, one
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (iters, time.perf_counter() - t0), warm, one


def naive_training(args, batch, budget):
    """A plain fp32 eager diffusers training step (images per second)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    dev = args.device
    model = build(args.preset, args.channels, args.image_size).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000)
    data = random_images(4 * batch, args.channels, args.image_size, dev)

    def step():
        idx = torch.randint(0, data.shape[0], (batch,), device=dev)
        x0 = data[idx].float() / 127.5 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=dev)
        loss = F.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return _timed(step, lambda: _sync(dev), budget, args.stage_share, args.train_steps), batch


def fast_training(args, budget):
    """The domain's training loop (``training.train``) at the fast batch (img/s)."""
    from stabfw.domains.diffusion.objectives import DDPMObjective
    from stabfw.domains.diffusion.runtime import Workspace
    from stabfw.domains.diffusion.training import train

    rt = _runtime(args, args.compile)
    ws = Workspace(lambda: build(args.preset, args.channels, args.image_size),
                   DDPMObjective(), rt)
    _cudnn(args)  # Workspace turns it on for CUDA; keep the one setting of the run
    w = build(args.preset, args.channels, args.image_size).state_dict()
    state = {"w": w, "ema": {k: v.clone() for k, v in w.items()}}
    data = random_images(8 * args.train_batch, args.channels, args.image_size, "cpu")
    chunk = max(1, args.train_steps // 4)  # steps per call: weights go in and out per call

    def step():
        res = train(ws, state["w"], state["ema"], data, steps=chunk, seed=0,
                    batch_size=args.train_batch, lr=1e-4, ema_beta=0.999, xflip=True)
        state["w"], state["ema"] = res.weights, res.ema

    timed, warm, one = _timed(step, lambda: _sync(args.device), budget, args.stage_share, 4)
    if timed is not None:
        timed = (timed[0] * chunk, timed[1])
    return (timed, warm, one / chunk), args.train_batch


def naive_sampling(args, budget):
    """fp32 eager DDIM through diffusers (network evaluations per second)."""
    import torch
    from diffusers import DDIMScheduler

    dev, b = args.device, args.naive_sample_batch
    model = build(args.preset, args.channels, args.image_size).to(dev).eval()
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(args.sample_steps)
    x = torch.randn(b, args.channels, args.image_size, args.image_size, device=dev)
    t = sched.timesteps[len(sched.timesteps) // 2]

    def step():
        with torch.no_grad():
            eps = model(x, t.to(dev).expand(b)).sample
            sched.step(eps, t, x)

    return _timed(step, lambda: _sync(dev), budget, args.stage_share, 4 * args.sample_steps), b


def fast_sampling(args, budget, mode):
    """The domain's sampling net in ``mode`` (evaluations per second)."""
    import torch

    from stabfw.domains.diffusion.objectives import DDPMObjective
    from stabfw.domains.diffusion.runtime import Workspace

    rt = _runtime(args, mode)
    ws = Workspace(lambda: build(args.preset, args.channels, args.image_size),
                   DDPMObjective(), rt)
    _cudnn(args)
    net = ws.sample_net(build(args.preset, args.channels, args.image_size).state_dict())
    b = args.sample_batch
    x = torch.randn(b, args.channels, args.image_size, args.image_size, device=args.device)
    t = torch.full((b,), 500, device=args.device, dtype=torch.long)

    def step():
        with torch.inference_mode():
            net(x, t)

    return _timed(step, lambda: _sync(args.device), budget, args.stage_share,
                  4 * args.sample_steps), b


def inception(args, budget):
    """Inception-v3 (torchvision's architecture, random weights) features at 299×299 and
    one Fréchet distance on 2048-d statistics (images per second)."""
    import numpy as np
    import torch

    from stabfw.domains.diffusion.metrics import feature_statistics, frechet_distance

    try:
        from torchvision.models import inception_v3
    except ImportError:
        return None  # skipped: torchvision is not installed
    dev, b = args.device, args.inception_batch
    net = inception_v3(weights=None, aux_logits=False, init_weights=False).to(dev).eval()
    net.fc = torch.nn.Identity()  # the 2048-d pool features, as FID uses
    x = torch.rand(b, 3, args.image_size, args.image_size, device=dev)

    def step():
        with torch.inference_mode():
            y = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear")
            net(y)

    out = _timed(step, lambda: _sync(dev), budget, args.stage_share, 20)
    f = np.random.default_rng(0).standard_normal((4096, 2048))
    t0 = time.perf_counter()
    mu, sigma = feature_statistics(f)
    frechet_distance(mu, sigma, mu + 0.1, sigma)
    return out, b, time.perf_counter() - t0


def full_generation(args, tmp: Path) -> dict[str, float]:
    """One generation of the CIFAR-10 protocol on random data: 50k fine-tuned, 50k sampled."""
    import pickle

    import numpy as np

    from stabfw.core.streams import stream
    from stabfw.domains.diffusion import DiffusionLoop

    root = tmp / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (10000, 3072), dtype=np.uint8),
                         b"labels": [0] * 10000}, fh)
    loop = DiffusionLoop(dataset="cifar10", data_dir=str(root), model=args.preset,
                         train_steps=2, finetune_steps=50_000 // args.train_batch,
                         batch_size=args.train_batch, lr=1e-4, ema_decay=0.999, xflip=True,
                         sampler="ddim", sampling_steps=args.sample_steps,
                         sample_batch_size=args.sample_batch, metric_features="none",
                         representation="probe", grid_size=0, device=args.device,
                         compile=args.compile)
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))  # compiles training; not timed
    loop.generate(s0, 2, stream(0, 0, "generate"))  # compiles sampling; not timed
    times = {}
    t0 = time.perf_counter()
    s1 = loop.fit(real, s0, stream(0, 1, "fit"))
    times["train_50k_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop.generate(s1, 50_000, stream(0, 1, "generate"))
    times["sample_50k_s"] = time.perf_counter() - t0
    times["total_s"] = sum(times.values())
    return times


def _runtime(args, mode):
    from stabfw.domains.diffusion.runtime import resolve_runtime

    precision = "auto" if args.device.startswith("cuda") else "bf16"
    return resolve_runtime(args.device, precision, None, mode, None)


def _cudnn(args) -> None:
    import torch

    torch.backends.cudnn.benchmark = args.cudnn_benchmark


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="ddpm-cifar10")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=512)
    p.add_argument("--naive-train-batch", type=int, default=128)
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--sample-batch", type=int, default=2048)
    p.add_argument("--naive-sample-batch", type=int, default=1024)
    p.add_argument("--sample-steps", type=int, default=100, help="DDIM steps (the configs')")
    p.add_argument("--inception-batch", type=int, default=500)
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds for the whole run; later stages are skipped, not overrun")
    p.add_argument("--stage-share", type=float, default=0.08,
                   help="share of the budget left that one stage's timed part may use")
    p.add_argument("--compile", default="default", help="torch.compile mode of the fast path")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false")
    p.add_argument("--full-generation", action="store_true")
    p.add_argument("--json", default=None, help="write the results here after every stage")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny shapes on CPU, eager, a few seconds: checks the script itself")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cpu_smoke:
        args.device, args.preset, args.channels, args.image_size = "cpu", "tiny", 1, 8
        args.train_batch, args.naive_train_batch, args.train_steps = 8, 4, 2
        args.sample_batch, args.naive_sample_batch, args.sample_steps = 8, 4, 2
        args.inception_batch, args.compile = 2, "off"
        args.budget_s = min(args.budget_s, 120.0)
        args.stage_share = 0.05
    import torch

    budget = Budget(args.budget_s, floor=2 if args.cpu_smoke else 0)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        _log("no CUDA device: nothing to measure (use --cpu-smoke for a smoke test)")
        return 2
    import diffusers

    _cudnn(args)
    meta = {"argv": sys.argv[1:] if argv is None else list(argv), "device": dev,
            "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else None,
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "cuda": torch.version.cuda, "cudnn_benchmark": bool(args.cudnn_benchmark),
            "preset": args.preset, "image_shape": [args.channels, args.image_size,
                                                   args.image_size],
            "compile": args.compile, "budget_s": args.budget_s, "cpu_smoke": args.cpu_smoke,
            "targets": TARGETS,
            "inception_note": "torchvision Inception-v3 architecture, random weights: the "
                              "FID network's compute, not its values"}
    rep = Report(args.json, meta)
    _log(f"device {meta['gpu'] or dev}; torch {torch.__version__}; diffusers "
         f"{diffusers.__version__}; budget {args.budget_s:.0f} s")

    def run(name, prior, fn, unit, per_iter):
        if budget.left() < PRIOR_S[prior] * (0.02 if args.cpu_smoke else 1.0):
            rep.stage(name, {"status": "skipped", "reason": f"{budget.left():.0f} s left, "
                             f"stage needs about {PRIOR_S[prior]:.0f} s"})
            _log(f"{name}: skipped (budget)")
            return None
        _peak_reset(dev)
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # one failing stage must not hide the others
            rep.stage(name, {"status": "failed", "error": f"{type(err).__name__}: {err}"[:500]})
            _log(f"{name}: failed: {type(err).__name__}: {err}")
            return None
        if out is None:
            rep.stage(name, {"status": "skipped", "reason": "torchvision not installed"})
            _log(f"{name}: skipped (torchvision not installed)")
            return None
        (timed, warm, one), batch = out[0], out[1]
        entry = {"status": "done", "batch": batch, "warmup_s": round(warm, 3),
                 "one_iteration_s": round(one, 5), "stage_s": round(time.perf_counter() - t0, 3),
                 "peak_memory_bytes": _peak(dev), "cudnn_benchmark":
                 bool(torch.backends.cudnn.benchmark)}
        if len(out) > 2:
            entry["frechet_2048d_s"] = round(out[2], 4)
        if timed is None:
            entry.update(status="skipped", reason="timed iterations do not fit the budget left")
            rep.stage(name, entry)
            _log(f"{name}: skipped after warm-up (budget)")
            return None
        iters, secs = timed
        rate = iters * per_iter(batch) / secs
        # significant digits, not decimals: a fast stage's few ms must still give its rate
        entry.update(iterations=iters, timed_s=float(f"{secs:.6g}"), unit=unit,
                     rate=round(rate, 2))
        rep.stage(name, entry)
        _log(f"{name}: {rate:,.0f} {unit} (batch {batch}, warm-up {warm:.1f} s)")
        return rate

    img = lambda b: b  # noqa: E731  (one image per batch element per iteration)
    nb = args.naive_train_batch
    naive128 = run(f"naive_train_b{nb}", "naive_train",
                   lambda: naive_training(args, nb, budget), "img/s", img)
    naive_fast = run(f"naive_train_b{args.train_batch}", "naive_train",
                     lambda: naive_training(args, args.train_batch, budget), "img/s", img)
    fast = run("fast_train", "fast_train", lambda: fast_training(args, budget), "img/s", img)
    naive_s = run("naive_sample", "naive_sample", lambda: naive_sampling(args, budget),
                  "evals/s", img)
    modes = ["default", "reduce-overhead"] if dev.startswith("cuda") else [args.compile]
    fast_s = {m: run(f"fast_sample_{m.replace('-', '_')}", "fast_sample",
                     lambda m=m: fast_sampling(args, budget, m), "evals/s", img)
              for m in modes}
    run("inception", "inception", lambda: inception(args, budget), "img/s", img)

    ratios = rep.data["ratios"]
    if fast and naive128:
        ratios[f"training_vs_naive_b{nb}"] = round(fast / naive128, 3)
    if fast and naive_fast:
        ratios["training_vs_naive_same_batch"] = round(fast / naive_fast, 3)
    for m, r in fast_s.items():
        if r and naive_s:
            ratios[f"sampling_{m.replace('-', '_')}_vs_naive"] = round(r / naive_s, 3)
    rep.write()
    for k, v in ratios.items():
        _log(f"RESULT {k}={v:.2f}x")

    if args.full_generation:
        if budget.left() < PRIOR_S["generation"]:
            rep.stage("generation", {"status": "skipped",
                                     "reason": f"{budget.left():.0f} s left"})
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                times = full_generation(args, Path(tmp))
            rep.stage("generation", {"status": "done", **{k: round(v, 2)
                                                          for k, v in times.items()}})
            _log("RESULT generation " + " ".join(f"{k}={v:.1f}" for k, v in times.items()))
    rep.data["meta"]["wall_s"] = round(time.perf_counter() - budget.t0, 2)
    rep.write()
    _log(f"total wall time {rep.data['meta']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
