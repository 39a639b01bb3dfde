"""A tiny diffusion loop end to end through ``stabfw run``: files, grids, resume; the
shipped configs validate; cold fits are shared through ``cache_dir``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.cli import main  # noqa: E402
from stabfw.domains.diffusion import DiffusionLoop, clear_caches  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY_RUN = {
    "domain": {"name": "diffusion", "dataset": "digits", "n_real": 32, "model": "tiny",
               "train_steps": 3, "finetune_steps": 2, "batch_size": 8, "sampling_steps": 3,
               "sample_batch_size": 32, "metric_samples": 16, "grid_size": 4,
               "device": "cpu"},
    "loop": {"policy": "fixed_real", "lam": 1, "generations": 2, "seeds": 1},
    "analysis": {"fixed_point": {"metrics": ["fd_digits_mlp"]}},
    "output": {"progress": False},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    clear_caches()


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_tiny_run_through_the_cli_writes_metrics_grids_and_resumes(tmp_path, monkeypatch):
    cfg = _write(tmp_path, TINY_RUN)
    sets = ["--set", "loop.lam=0.5", "--set", "domain.sampling_steps=2"]
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out), *sets]) == 0
    for name in ("metrics.csv", "params.npz", "summary.json", "report.png", "config.yaml"):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["generation"]) == [0, 1, 2]
    assert list(metrics["n_synthetic"]) == [0, 16, 16]  # ⌊0.5 × 32⌋ from the --set
    assert (metrics["nfe_per_image"] == 2).all()
    for col in ("fd_digits_mlp", "precision_digits_mlp", "recall_digits_mlp", "train_loss"):
        assert np.isfinite(metrics[col]).all(), col
    assert (metrics["dist_to_theta_star"].iloc[1:] > 0).all()
    samples = out / "samples"
    assert [p.name for p in sorted((samples / "seed0").glob("*.png"))] == [
        "gen000.png", "gen001.png", "gen002.png"]
    assert (samples / "seed0.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert "fd_digits_mlp" in json.dumps(summary["analysis"])  # the fixed-point analyzer ran

    # interrupt a second run during generation 2, then resume it
    clear_caches()
    calls = {"n": 0}
    original = DiffusionLoop.metrics

    def flaky(self, state, rng):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, state, rng)

    monkeypatch.setattr(DiffusionLoop, "metrics", flaky)
    out2 = tmp_path / "resumed"
    assert main(["run", cfg, "--out", str(out2), *sets]) == 130  # Ctrl-C: exit 130, no traceback
    assert not (out2 / "metrics.csv").exists()
    monkeypatch.setattr(DiffusionLoop, "metrics", original)
    clear_caches()
    assert main(["run", cfg, "--out", str(out2), "--resume", *sets]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "metrics.csv"), metrics)
    with np.load(out / "params.npz") as a, np.load(out2 / "params.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    assert (out2 / "samples" / "seed0" / "gen002.png").is_file()


def test_cold_fits_are_shared_through_cache_dir(tmp_path, monkeypatch):
    from stabfw.core.streams import stream

    kw = dict(DiffusionLoop.test_params, device="cpu", cache_dir=str(tmp_path / "cache"))
    loop = DiffusionLoop(**kw)
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    assert len(list((tmp_path / "cache").glob("fit-*.pkl"))) == 1
    clear_caches()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached fit should have been used")

    import stabfw.domains.diffusion.training as training

    monkeypatch.setattr(training, "train", no_training)
    other = DiffusionLoop(**{**kw, "metric_samples": 7})  # metrics settings do not matter
    np.testing.assert_array_equal(other.params(other.fit(real, None, stream(0, 0, "fit"))),
                                  loop.params(s))
    with pytest.raises(AssertionError, match="cached fit"):  # another seed is another fit
        other.fit(real, None, stream(1, 0, "fit"))


@pytest.mark.parametrize("name", ["digits_ddpm", "cifar10_ddpm", "cifar10_edm", "ffhq64_edm"])
def test_shipped_configs_validate(name, capsys):
    assert main(["validate", str(CONFIGS / f"{name}.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.slow
def test_digits_config_end_to_end(tmp_path):
    """The full CPU experiment (about 5 minutes on 2 free cores): λ ≤ 1 stays near θ*,
    λ = inf drifts away."""
    out = tmp_path / "digits"
    assert main(["run", str(CONFIGS / "digits_ddpm.yaml"), "--out", str(out),
                 "--set", f"domain.cache_dir={tmp_path / 'cache'}"]) == 0
    final = {}
    for cell in ("lam=0", "lam=0.5", "lam=1", "lam=inf"):
        m = pd.read_csv(out / "cells" / cell / "metrics.csv")
        final[cell] = m.iloc[-1]
    for cell in ("lam=0", "lam=0.5", "lam=1"):
        assert final["lam=inf"]["dist_to_theta_star"] > final[cell]["dist_to_theta_star"]
        assert final["lam=inf"]["fd_digits_mlp"] > final[cell]["fd_digits_mlp"]
    assert (out / "report.png").is_file()


def _page_images(html: str) -> dict[str, bytes]:
    import base64
    import re

    return {alt: base64.b64decode(data) for alt, data in re.findall(
        r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)}


def test_tiny_run_page_shows_its_sample_grids(tmp_path):
    """The digits page embeds the montage the run wrote (one row per generation)."""
    cfg = _write(tmp_path, {**TINY_RUN, "analysis": None})
    out = tmp_path / "run"
    assert main(["run", cfg, "--out", str(out), "--set", "domain.sampling_steps=2",
                 "--set", "domain.metric_samples=0", "--set", "loop.generations=1"]) == 0
    html = (out / "report.html").read_text()
    images = _page_images(html)
    assert images["samples/seed0.png"] == (out / "samples" / "seed0.png").read_bytes()
    assert "samples of seed 0, one row per generation" in html
    assert html.index('id="summary"') < html.index('id="domain-figures"')


@pytest.mark.slow
def test_tiny_sweep_page_shows_grids_per_generation_and_lambda(tmp_path):
    cfg = _write(tmp_path, {**TINY_RUN, "analysis": None,
                            "sweep": {"grid": {"loop.lam": [0.5, 1]}, "backend": "serial"}})
    out = tmp_path / "sweep"
    assert main(["run", cfg, "--out", str(out), "--set", "domain.sampling_steps=2",
                 "--set", "domain.metric_samples=0", "--set", "loop.generations=1"]) == 0
    html = (out / "report.html").read_text()
    images = _page_images(html)
    assert "Samples per generation and λ (seed 0)" in images  # the combined figure
    for cell in ("lam=0.5", "lam=1"):
        rel = f"cells/{cell}/samples/seed0.png"
        assert images[rel] == (out / rel).read_bytes()
    assert "λ = 0.5: samples of seed 0" in html and "λ = 1: samples of seed 0" in html
