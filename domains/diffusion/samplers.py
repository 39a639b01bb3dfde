"""Samplers: DDIM and DDPM ancestral (through diffusers' ``DDIMScheduler``) for the DDPM
objective; Euler (EDM's DDIM) and Heun (2nd order) on Karras et al.'s σ grid for EDM.

Every sampler is a function of its inputs only: the initial noise and, for the
ancestral sampler, one noise image per step are passed in (:func:`draw_noise`), so that
sampling is reproducible under a seed and, with the weights as a tensor, differentiable
(a reparameterised generator for the implicit Jacobian).

References
----------
Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (DDIM; η = 1 is
DDPM's ancestral sampler on the strided chain). Ho, Jain & Abbeel, NeurIPS 2020 (DDPM).
Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
NeurIPS 2022 (Algorithm 1: Heun's 2nd-order sampler; eq. 5: the σ schedule).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SAMPLERS", "check_sampler", "draw_noise", "nfe", "sample", "unet_call"]

SAMPLERS = ("ddim", "ddpm", "edm-heun")
_VALID = {"ddpm": ("ddim", "ddpm"), "edm": ("ddim", "edm-heun")}


def check_sampler(objective_kind: str, sampler: str, steps: int) -> None:
    """Raise a clear error for a sampler the objective cannot use."""
    if sampler not in SAMPLERS:
        raise ValueError(f"domain.sampler: unknown sampler {sampler!r}; accepted: "
                         f"{', '.join(SAMPLERS)}")
    if sampler not in _VALID[objective_kind]:
        raise ValueError(f"domain.sampler={sampler!r} does not fit domain.objective="
                         f"{objective_kind!r}; use one of {', '.join(_VALID[objective_kind])}")
    if steps < 1:
        raise ValueError(f"domain.sampling_steps must be ≥ 1, got {steps}")


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations per image: ``steps`` (DDIM, DDPM, Euler), ``2·steps − 1`` (Heun)."""
    return 2 * steps - 1 if sampler == "edm-heun" else steps


def unet_call(model, dtype=None, channels_last: bool = False):
    """``net(x, t) -> tensor`` around a ``UNet2DModel`` (casts to ``dtype`` and back)."""
    import torch

    def net(x, t):
        y = x if dtype is None else x.to(dtype)
        if channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        out = model(y, t).sample
        return out.to(x.dtype)

    return net


def draw_noise(sampler: str, steps: int, n: int, shape: tuple[int, ...], generator, device=None,
               dtype=None):
    """The random inputs of ``n`` samples: ``(n, *shape)``, or ``(n, 1 + steps, *shape)`` for
    the ancestral ``ddpm`` sampler (initial noise, then one image per step)."""
    import torch

    k = 1 + steps if sampler == "ddpm" else 1
    z = torch.randn((n, k, *shape), generator=generator, device=device,
                    dtype=dtype or torch.float32)
    return z if sampler == "ddpm" else z[:, 0]


def _ddim_scheduler(objective, steps: int):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**objective.scheduler_config(), set_alpha_to_one=True,
                          timestep_spacing="leading", steps_offset=0)
    sched.set_timesteps(steps)
    return sched


def _ddpm_family(net, objective, sampler: str, steps: int, noise):
    import torch

    ancestral = sampler == "ddpm"
    x = noise[:, 0] if ancestral else noise
    sched = _ddim_scheduler(objective, steps)
    n = x.shape[0]
    for i, t in enumerate(sched.timesteps.tolist()):
        tt = torch.full((n,), t, device=x.device, dtype=torch.long)
        eps = net(x, tt)
        # η = 1 with the ε re-derived from the clipped x̂₀ is exactly DDPM's posterior step.
        x = sched.step(eps, t, x, eta=1.0 if ancestral else 0.0,
                       use_clipped_model_output=ancestral,
                       variance_noise=noise[:, 1 + i] if ancestral else None).prev_sample
    return x


def _edm(net, objective, steps: int, noise, heun: bool):
    sig = objective.sigmas(steps).tolist()
    x = noise * sig[0]
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        d = (x - objective.denoise(net, x, s)) / s
        x_next = x + (s_next - s) * d
        if heun and s_next > 0:
            d2 = (x_next - objective.denoise(net, x_next, s_next)) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return x


def sample(net, objective: Any, sampler: str, steps: int, noise):
    """Run a sampler from given noise; returns model-space images (unclipped floats).

    Parameters
    ----------
    net : callable
        ``net(x, t) -> tensor``, the UNet (see :func:`unet_call`).
    objective : DDPMObjective or EDMObjective
    sampler : {"ddim", "ddpm", "edm-heun"}
        ``ddim`` is DDIM (η = 0) for DDPM and Euler on the σ grid for EDM (the same
        method, Karras et al. §3); ``ddpm`` is the ancestral sampler; ``edm-heun`` is
        Karras et al.'s Algorithm 1 without churn.
    steps : int
        Number of steps (network evaluations: :func:`nfe`).
    noise : tensor
        From :func:`draw_noise`.
    """
    check_sampler(objective.kind, sampler, steps)
    if objective.kind == "ddpm":
        return _ddpm_family(net, objective, sampler, steps, noise)
    return _edm(net, objective, steps, noise, heun=sampler == "edm-heun")
