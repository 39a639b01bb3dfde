"""The training loop of one generation: AdamW on the objective, EMA, optional warm-up.

Everything random comes from one torch generator (minibatch indices, flips, noise,
timesteps/σ) plus the global torch RNG forked and seeded for the duration of the fit
(dropout), so a fit is a deterministic function of its inputs on CPU. No host–device
synchronisation inside the loop: the loss is accumulated on the device and read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stabfw.domains.diffusion.ema import ema_decay, ema_update

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """CPU copies of the trained weights (and EMA), and the mean training loss."""

    weights: dict[str, Any]
    ema: dict[str, Any] | None
    mean_loss: float
    steps: int


def train(workspace, weights: dict[str, Any], ema: dict[str, Any] | None, data, *, steps: int,
          batch_size: int, lr: float, seed: int, start_step: int = 0, warmup_steps: int = 0,
          weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
          grad_clip: float | None = None, ema_beta: float = 0.0, xflip: bool = False,
          progress: bool = False) -> TrainResult:
    """Train from ``weights`` for ``steps`` optimiser steps on ``uint8`` images ``data``.

    Parameters
    ----------
    workspace : Workspace
        Device modules and the (compiled) loss.
    weights, ema : dict of CPU tensors
        Start weights and EMA weights (``ema=None`` with ``ema_beta=0``: no EMA).
    data : torch.Tensor of uint8, (N, C, H, W)
    steps, batch_size, lr : training length, minibatch size, AdamW learning rate.
    seed : int
        Seed of every random draw of the fit.
    start_step : int
        Optimiser steps already taken by this lineage (EMA warm-up continues from it).
    warmup_steps : int
        Linear learning-rate warm-up over the first steps of this fit.

    References
    ----------
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).
    """
    import torch

    rt = workspace.runtime
    model = workspace.train_model(weights)
    loss_fn = workspace.train_loss()
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"fused": True} if rt.fused_adam else {"foreach": True}
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)
    ema_dev = None
    if ema is not None and ema_beta > 0:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        ema_dev = [ema[n].to(rt.device, dtype=torch.float32).clone() for n in names]
    data_dev = data.to(rt.device, non_blocking=True)
    n = data_dev.shape[0]
    if n == 0:
        raise ValueError("cannot train on an empty data set")
    gen = rt.generator(seed)
    total = torch.zeros((), device=rt.device)
    fork_devices = [torch.device(rt.device)] if rt.device_type == "cuda" else []
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # dropout draws from the global RNG; forked, so nothing leaks
        for k in tqdm(range(steps), desc="training", unit="step", leave=False,
                      disable=not progress):
            idx = torch.randint(0, n, (batch_size,), generator=gen, device=rt.device)
            xu8 = data_dev[idx]
            flip = (torch.rand(batch_size, generator=gen, device=rt.device) < 0.5) if xflip \
                else torch.zeros(batch_size, dtype=torch.bool, device=rt.device)
            eps = torch.randn(xu8.shape, generator=gen, device=rt.device)
            aux = workspace.objective.draw(batch_size, gen, rt.device)
            loss = loss_fn(xu8, flip, eps, aux)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
            if warmup_steps:
                for group in opt.param_groups:
                    group["lr"] = lr * min(1.0, (k + 1) / warmup_steps)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema_dev is not None:
                ema_update(ema_dev, params, ema_decay(ema_beta, start_step + k))
            total += loss.detach()
    mean_loss = float(total) / max(steps, 1)
    out = {k: v.detach().to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
           .clone() for k, v in model.state_dict().items()}
    new_ema = None
    if ema_dev is not None:
        new_ema = dict(out)
        for name, e in zip(names, ema_dev):
            new_ema[name] = e.detach().to("cpu").contiguous().clone()
    return TrainResult(out, new_ema, mean_loss, start_step + steps)
