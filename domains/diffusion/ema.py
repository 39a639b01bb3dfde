"""Exponential moving average of the weights, with the usual warm-up of the decay.

References
----------
Song & Ermon, "Improved Techniques for Training Score-Based Generative Models", NeurIPS
2020 (EMA of diffusion weights); the warm-up ``min(β, (1 + k)/(10 + k))`` is the one of
diffusers' ``EMAModel`` (``use_ema_warmup=False``).
"""

from __future__ import annotations

__all__ = ["ema_decay", "ema_update"]


def ema_decay(decay: float, step: int) -> float:
    """The decay used at optimiser step ``step`` (0-based): ``min(β, (1 + k)/(10 + k))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: list, params: list, decay: float) -> None:
    """In place: ``ema ← decay · ema + (1 − decay) · params`` (one fused foreach op)."""
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - decay)
