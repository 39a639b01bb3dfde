"""Starting generation 0 from checkpoints: the Hub's google/ddpm-cifar10-32 layout (old
config keys, old attention weight names), Ho et al.'s network exactly, EDM pickles."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.core.streams import stream  # noqa: E402
from stabfw.domains.diffusion import DiffusionLoop  # noqa: E402
from stabfw.domains.diffusion.models import build_unet, load_checkpoint, param_count  # noqa: E402

# config.json of google/ddpm-cifar10-32 as old diffusers wrote it: no attention_head_dim,
# no dropout, none of the keys added since (add_attention, resnet_time_scale_shift, …).
GOOGLE_CONFIG = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
_OLD_NAMES = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.",
              ".to_out.0.": ".proj_attn."}


def _old_name(key: str) -> str:
    for new, old in _OLD_NAMES.items():
        key = key.replace(new, old)
    return key


def write_google_layout(root, seed: int = 0) -> dict:
    """A pipeline folder shaped like the Hub's google/ddpm-cifar10-32 with random weights.

    Returns the state dict in today's names (what loading must give back).
    """
    torch.manual_seed(seed)
    model = build_unet("ddpm-cifar10", 3, 32)
    weights = {k: torch.randn_like(v) * 0.02 for k, v in model.state_dict().items()}
    unet = root / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(GOOGLE_CONFIG, indent=2))
    torch.save({_old_name(k): v for k, v in weights.items()},
               unet / "diffusion_pytorch_model.bin")
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "DDPMPipeline", "_diffusers_version": "0.0.4",
         "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}))
    return weights


def _ho_param_count(ch=128, mult=(1, 2, 2, 2), blocks=2, attn_levels=(1,), in_ch=3) -> int:
    """Parameters of Ho et al.'s DDPM UNet counted from its definition (diffusion_tf's
    ``unet.model``), independently of diffusers."""
    temb = 4 * ch

    def conv(i, o, k=3):
        return k * k * i * o + o

    def norm(c):
        return 2 * c

    def res(i, o):
        return (norm(i) + conv(i, o) + temb * o + o + norm(o) + conv(o, o)
                + (conv(i, o, 1) if i != o else 0))

    def attn(c):
        return norm(c) + 4 * (c * c + c)

    total = (ch * temb + temb) + (temb * temb + temb) + conv(in_ch, ch)
    chans, c = [ch], ch
    for level, m in enumerate(mult):
        for _ in range(blocks):
            total += res(c, ch * m) + (attn(ch * m) if level in attn_levels else 0)
            c = ch * m
            chans.append(c)
        if level != len(mult) - 1:
            total += conv(c, c)
            chans.append(c)
    total += res(c, c) + attn(c) + res(c, c)
    for level, m in reversed(list(enumerate(mult))):
        for _ in range(blocks + 1):
            total += res(c + chans.pop(), ch * m) + (attn(ch * m) if level in attn_levels else 0)
            c = ch * m
        if level != 0:
            total += conv(c, c)
    return total + norm(c) + conv(c, in_ch)


def test_ddpm_cifar10_preset_is_hos_network():
    model = build_unet("ddpm-cifar10", 3, 32)
    assert _ho_param_count() == 35_746_307  # Ho et al. report 35.7 M
    assert param_count(model) == _ho_param_count()
    attn = [m for m in model.modules() if type(m).__name__ == "Attention"]
    assert len(attn) == 2 + 3 + 1  # down 2, up 3, mid 1
    assert all(a.heads == 1 for a in attn)  # single head, as in Ho et al.
    resnet_dropouts = [r.dropout.p for r in model.modules() if type(r).__name__ == "ResnetBlock2D"]
    assert len(resnet_dropouts) == 4 * 2 + 2 + 4 * 3 and set(resnet_dropouts) == {0.1}


def _fake_cifar(root, n=20, seed=0):
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n // 5, 3072), dtype=np.uint8),
                         b"labels": [0] * (n // 5)}, fh)
    return root


def test_google_layout_starts_generation_0(tmp_path):
    expected = write_google_layout(tmp_path / "ddpm-cifar10-32")
    assert "down_blocks.1.attentions.0.query.weight" in torch.load(
        tmp_path / "ddpm-cifar10-32" / "unet" / "diffusion_pytorch_model.bin")
    loop = DiffusionLoop(dataset="cifar10", data_dir=str(_fake_cifar(tmp_path / "cifar")),
                         model="ddpm-cifar10", init_checkpoint=str(tmp_path / "ddpm-cifar10-32"),
                         train_steps=0, metric_features="none", grid_size=0, device="cpu",
                         representation="probe")
    state = loop.fit(loop.real_data(stream(0, -1, "real")), None, stream(0, 0, "fit"))
    assert state.weights.keys() == expected.keys()
    assert all(torch.equal(state.weights[k], expected[k]) for k in expected)
    assert all(torch.equal(state.ema[k], expected[k]) for k in expected)


def test_checkpoint_config_mismatch_and_edm_pickle_are_clear_errors(tmp_path):
    write_google_layout(tmp_path / "g")
    eight_heads = build_unet("ddpm-cifar10", 3, 32, {"attention_head_dim": 8})
    with pytest.raises(ValueError, match="attention_head_dim: configured 8, checkpoint None"):
        load_checkpoint(tmp_path / "g", eight_heads)
    wider = dict(GOOGLE_CONFIG, layers_per_block=3)
    (tmp_path / "g" / "unet" / "config.json").write_text(json.dumps(wider))
    with pytest.raises(ValueError, match="layers_per_block: configured 2, checkpoint 3"):
        load_checkpoint(tmp_path / "g", build_unet("ddpm-cifar10", 3, 32))
    (tmp_path / "network-snapshot-200000.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match=r"SongUNet.*no converter"):
        load_checkpoint(tmp_path / "network-snapshot-200000.pkl", eight_heads)
