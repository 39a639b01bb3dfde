"""UNets built from a config record (no weight download), and their flat parameter vector.

Presets are ``diffusers.UNet2DModel`` keyword arguments; ``sample_size``,
``in_channels`` and ``out_channels`` come from the data.

References
----------
Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (the
DDPM-CIFAR10 architecture, ``google/ddpm-cifar10-32`` in diffusers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PRESETS",
    "build_unet",
    "cast_module",
    "decompose_group_norms",
    "flatten_state",
    "load_checkpoint",
    "param_count",
    "unflatten_vector",
]

PRESETS: dict[str, dict[str, Any]] = {
    # ≈1.6e5 parameters at one channel: the CPU model of the digits runs and the tests.
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D")),
    # ≈1.0e6 parameters, attention at the lowest resolution.
    "small": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    # Ho et al.'s CIFAR-10 model exactly: 35,746,307 parameters, one attention head at
    # 16×16 (attention_head_dim=None: a head as wide as the block), dropout 0.1.
    "ddpm-cifar10": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                         attention_head_dim=None,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                           "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                         norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
                         freq_shift=1, dropout=0.1),
    # The same widths at 64×64 with attention at 16×16 (FFHQ-64).
    "ddpm-64": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                    attention_head_dim=None,
                    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                      "DownBlock2D"),
                    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                    norm_eps=1e-6, dropout=0.1),
}


def build_unet(preset: str, channels: int, image_size: int,
               overrides: dict[str, Any] | None = None):
    """A freshly initialised ``UNet2DModel`` (CPU, fp32) from a preset.

    Parameters
    ----------
    preset : str
        A key of :data:`PRESETS`.
    channels : int
        Image channels (input and output).
    image_size : int
        Height and width of the images.
    overrides : dict, optional
        More ``UNet2DModel`` keyword arguments (they win over the preset's).
    """
    from diffusers import UNet2DModel

    if preset not in PRESETS:
        raise ValueError(f"domain.model: unknown preset {preset!r}; accepted: "
                         f"{', '.join(PRESETS)}")
    kwargs = dict(PRESETS[preset])
    kwargs.update(overrides or {})
    for key in ("sample_size", "in_channels", "out_channels"):
        if key in (overrides or {}):
            raise ValueError(f"domain.model_overrides.{key}: set by the data, not the model")
    levels = len(kwargs["block_out_channels"])
    if image_size % (2 ** (levels - 1)):
        raise ValueError(f"domain.image_size={image_size} must be divisible by "
                         f"{2 ** (levels - 1)} for the {levels}-level preset {preset!r}")
    try:
        return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                           **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"domain.model_overrides: UNet2DModel rejected the config: {err}") from None


def cast_module(model, device=None, dtype=None):
    """``model.to(device, dtype)`` without diffusers' warning about fp32-only modules
    (a UNet2DModel has none)."""
    import logging

    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return model.to(device=device, dtype=dtype)
    finally:
        logger.setLevel(level)


def _group_norm(self, x):
    n, c = x.shape[:2]
    g = x.reshape(n, self.num_groups, -1)
    mean = g.mean(dim=-1, keepdim=True)
    var = (g - mean).pow(2).mean(dim=-1, keepdim=True)
    y = ((g - mean) / (var + self.eps).sqrt()).reshape(x.shape)
    if self.affine:
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
    return y


def decompose_group_norms(model):
    """Swap every ``GroupNorm``'s kernel for plain tensor ops (same parameters), in place.

    Forward-over-reverse differentiation (``torch.func.jvp`` of a gradient, a
    Hessian-vector product) fails inside the fused group-norm backward; the decomposed
    form is differentiable any number of times in either mode.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.forward = _group_norm.__get__(module)
    return model


def param_count(model) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def flatten_state(weights: dict[str, Any]) -> np.ndarray:
    """The tensors of a state dict, in order, as one float32 numpy vector."""
    import torch

    return torch.cat([w.detach().reshape(-1).float().cpu() for w in weights.values()]).numpy()


def unflatten_vector(theta, like: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_state`: tensors shaped like ``like`` (float32 copies)."""
    import torch

    vec = torch.as_tensor(np.asarray(theta), dtype=torch.float32)
    total = sum(w.numel() for w in like.values())
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"θ has {vec.numel()} entries; this model has {total} parameters")
    out, start = {}, 0
    for name, w in like.items():
        out[name] = vec[start:start + w.numel()].reshape(w.shape).clone()
        start += w.numel()
    return out


def _canon(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


# Keys absent from configs written by old diffusers (e.g. the Hub's google/ddpm-cifar10-32)
# whose meaning then differs from today's default: the old AttentionBlock had one head.
_LEGACY_MEANING = {"attention_head_dim": None}
# Training-time settings, not architecture: they do not change what the weights compute.
_NOT_ARCHITECTURE = {"dropout", "sample_size", "num_train_timesteps"}


def _checkpoint_mismatch(folder: Path, model) -> dict[str, tuple[Any, Any]]:
    """Architecture keys on which ``folder/config.json`` and ``model.config`` disagree.

    Only the keys written in the file are compared (an old config lacks the keys added
    since), with :data:`_LEGACY_MEANING` for keys whose old meaning differs from today's
    default.
    """
    import json

    raw = json.loads((folder / "config.json").read_text())
    for key, meaning in _LEGACY_MEANING.items():
        raw.setdefault(key, meaning)
    ours = dict(model.config)
    return {k: (ours[k], raw[k]) for k in raw
            if not k.startswith("_") and k not in _NOT_ARCHITECTURE and k in ours
            and _canon(ours[k]) != _canon(raw[k])}


def load_checkpoint(path: str | Path, model) -> dict[str, Any]:
    """Weights for ``model`` from a diffusers directory or a ``.safetensors``/``.bin`` file.

    A diffusers directory (``config.json`` + ``diffusion_pytorch_model.*``, as written by
    ``save_pretrained`` or as on the Hub, e.g. ``google/ddpm-cifar10-32``; or a pipeline
    folder with a ``unet/`` subfolder) is read with ``UNet2DModel.from_pretrained(...,
    local_files_only=True)``, which renames old attention weights (``query``, ``key``,
    ``value``, ``proj_attn``) to today's (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).
    Its architecture must match the configured one on the keys its ``config.json``
    states; ``dropout`` is a training setting and may differ.

    EDM's own snapshots (``network-snapshot-*.pkl``) are rejected with an explanation:
    they pickle NVIDIA's SongUNet/DhariwalUNet classes together with their
    ``torch_utils`` persistence code, a different network from ``UNet2DModel`` (other
    blocks, resampling filters and skip scaling), so there is no weight-for-weight
    conversion.
    """
    import torch

    path = Path(path).expanduser()
    if path.suffix == ".pkl":
        raise ValueError(
            f"domain.init_checkpoint: {path} is a pickle (EDM's network-snapshot-*.pkl format). "
            "Those hold NVIDIA's SongUNet/DhariwalUNet, not a diffusers UNet2DModel, and need "
            "NVIDIA's torch_utils to unpickle; no converter exists. Train generation 0 instead "
            "(train_steps > 0, init_checkpoint: null) or give a UNet2DModel directory or "
            ".safetensors file of the configured architecture")
    if path.is_dir():
        folder = next((f for f in (path, path / "unet") if (f / "config.json").is_file()), None)
        if folder is None:
            raise FileNotFoundError(
                f"domain.init_checkpoint: {path} holds no config.json (a diffusers directory "
                "written by UNet2DModel.save_pretrained, or a pipeline folder with unet/)")
        differ = _checkpoint_mismatch(folder, model)
        if differ:
            shown = ", ".join(f"{k}: configured {a!r}, checkpoint {b!r}"
                              for k, (a, b) in list(differ.items())[:4])
            raise ValueError(f"domain.init_checkpoint: {folder} has another UNet config ({shown}); "
                             "set domain.model / model_overrides to match it")
        from diffusers import UNet2DModel

        try:
            loaded = UNet2DModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"domain.init_checkpoint: cannot load {folder}: {err}") from None
        weights = loaded.state_dict()
    elif not path.is_file():
        raise FileNotFoundError(f"domain.init_checkpoint: no file or directory at {path}")
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:3]}" if missing else "",
                 f"unexpected {unexpected[:3]}" if unexpected else "",
                 f"shape mismatch at {wrong[:3]}" if wrong else ""]
        detail = "; ".join(p for p in parts if p)
        raise ValueError(f"domain.init_checkpoint: {path} does not fit the configured UNet "
                         f"({detail}); set domain.model / model_overrides to its architecture")
    return {k: weights[k].float().clone() for k in expected}
