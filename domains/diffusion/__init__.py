"""Diffusion domain: a diffusers UNet retrained on real images plus λ× its own samples.

Modules: :mod:`~domains.diffusion.data` (digits, CIFAR-10, image folders),
:mod:`~domains.diffusion.models` (UNet presets), :mod:`~domains.diffusion.objectives`
(DDPM, EDM), :mod:`~domains.diffusion.samplers` (DDIM, DDPM ancestral, EDM Heun),
:mod:`~domains.diffusion.training`, :mod:`~domains.diffusion.runtime` (GPU settings),
:mod:`~domains.diffusion.metrics` and :mod:`~domains.diffusion.features` (FID,
precision/recall, the digits feature space), :mod:`~domains.diffusion.grids`.
Nothing heavy is imported until a loop is used.
"""

from stabfw.domains.diffusion.loop import DiffusionLoop, DiffusionState, clear_caches

__all__ = ["DiffusionLoop", "DiffusionState", "clear_caches"]
