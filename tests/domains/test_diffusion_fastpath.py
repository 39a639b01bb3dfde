"""The diffusion fast path as one object per process: no graph breaks, one compiled shape,
one workspace per architecture, generation 0 trained once; and the fine-tuning protocol,
FID naming, the on-disk reference statistics and the per-phase timing."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.core.streams import stream  # noqa: E402
from stabfw.domains.diffusion import DiffusionLoop, clear_caches  # noqa: E402
from stabfw.domains.diffusion import training as training_mod  # noqa: E402
from stabfw.domains.diffusion.loop import EDM_FINETUNE_LR, fid_name  # noqa: E402

TINY = dict(DiffusionLoop.test_params, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    clear_caches()
    yield
    clear_caches()


def _loop(**kw) -> DiffusionLoop:
    return DiffusionLoop(**{**TINY, **kw})


def _explain(fn, *args):
    import torch._dynamo

    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args)


@pytest.mark.parametrize("objective", ["ddpm", "edm"])
def test_training_and_sampling_steps_have_no_graph_breaks(objective):
    # "small" has attention blocks; bf16 autocast + channels_last as on the GPU
    loop = _loop(model="small", objective=objective, precision="bf16", channels_last=True)
    loop.real_data(stream(0, -1, "real"))
    ws = loop._workspace()
    weights = loop._build(0).state_dict()
    ws.train_model(weights)
    ws.train_loss()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=g)
    flip = torch.tensor([True, False, True, False])
    eps = torch.randn(x.shape, generator=g)
    aux = loop._objective.draw(4, g, "cpu")
    train = _explain(ws.eager_train_loss, x, flip, eps, aux)
    assert train.graph_break_count == 0, train.break_reasons
    assert train.graph_count == 1
    ws.sample_net(weights)
    t = (torch.full((4,), 500, dtype=torch.long) if objective == "ddpm"
         else torch.full((4,), -0.3))
    with torch.inference_mode():
        sample = _explain(ws.eager_sample_forward, torch.randn(4, 1, 8, 8, generator=g), t)
    assert sample.graph_break_count == 0, sample.break_reasons
    assert sample.graph_count == 1


@pytest.fixture
def compile_counter(monkeypatch):
    """torch.compile with a counting eager backend: counts compilations (and recompiles)
    of the domain's compiled callables without inductor's minutes of codegen."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    original = torch.compile

    def counting(fn, *, mode=None, dynamic=None, **kw):
        return original(fn, backend=counter, dynamic=dynamic)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", counting)
    return counter


def test_compiled_once_per_process_with_padded_batches(compile_counter):
    loop = _loop(compile="default", sample_batch_size=4)
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))
    s1 = loop.fit(real, s0, stream(0, 1, "fit"))
    six = loop.generate(s1, 6, stream(0, 1, "generate"))  # batches of 4 and 2 (padded to 4)
    eight = loop.generate(s1, 8, stream(0, 1, "generate"))
    assert tuple(six.shape) == (6, 1, 8, 8)
    assert torch.equal(six, eight[:6])  # the padded tail is sampled and dropped
    loop.generate(s1, 3, stream(0, 2, "generate"))
    # a second loop of the same architecture (another sweep cell, another lr) reuses it all
    other = _loop(compile="default", sample_batch_size=4, finetune_lr=1e-4)
    assert other._workspace() is loop._workspace()
    other.fit(real, s0, stream(1, 1, "fit"))
    other.generate(s0, 5, stream(1, 1, "generate"))
    assert compile_counter.frame_count == 2  # one training graph, one sampling graph
    assert _loop(model="small")._workspace() is not loop._workspace()


def test_generation_0_is_trained_once_by_concurrent_workers(tmp_path, monkeypatch):
    calls = []
    original = training_mod.train

    def counted(*args, **kw):
        calls.append(kw["steps"])
        return original(*args, **kw)

    monkeypatch.setattr(training_mod, "train", counted)
    real = _loop().real_data(stream(0, -1, "real"))
    states = [None, None]

    def worker(i):
        loop = _loop(cache_dir=str(tmp_path / "cache"))
        states[i] = loop.fit(real, None, stream(0, 0, "fit"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert calls == [TINY["train_steps"]]
    assert all(torch.equal(states[0].weights[k], states[1].weights[k]) for k in states[0].weights)
    assert len(list((tmp_path / "cache").glob("fit-*.pkl"))) == 1


def test_finetune_learning_rate_and_ramp(monkeypatch):
    seen = []
    original = training_mod.train

    def spy(*args, **kw):
        seen.append((kw["lr"], kw["warmup_steps"]))
        return original(*args, **kw)

    monkeypatch.setattr(training_mod, "train", spy)
    ddpm = _loop(lr=1e-3, warmup_steps=2, finetune_steps=20)
    real = ddpm.real_data(stream(0, -1, "real"))
    s0 = ddpm.fit(real, None, stream(0, 0, "fit"))
    ddpm.fit(real, s0, stream(0, 1, "fit"))
    edm = _loop(objective="edm", lr=1e-3, finetune_steps=20)
    e0 = edm.fit(real, None, stream(0, 0, "fit"))
    edm.fit(real, e0, stream(0, 1, "fit"))
    custom = _loop(finetune_lr=5e-5, lr_warmup_steps=3)
    custom.fit(real, s0, stream(0, 1, "fit"))
    assert seen == [(1e-3, 2), (1e-3, 0), (1e-3, 0), (EDM_FINETUNE_LR, 2), (5e-5, 3)]
    with pytest.raises(ValueError, match="finetune_lr"):
        _loop(finetune_lr=0.0).real_data(stream(0, -1, "real"))


def test_training_ramp_sets_the_learning_rate_per_step(monkeypatch):
    lrs = []
    original_step = torch.optim.AdamW.step

    def record(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    loop = _loop(finetune_steps=5, finetune_lr=1e-3, lr_warmup_steps=4)
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))
    lrs.clear()
    loop.fit(real, s0, stream(0, 1, "fit"))
    np.testing.assert_allclose(lrs, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_fid_is_named_by_its_sample_count():
    assert (fid_name(10_000), fid_name(50_000), fid_name(24)) == ("fid10k", "fid50k", "fid24")


def test_reference_statistics_are_cached_on_disk(tmp_path, monkeypatch):
    from stabfw.domains.diffusion.features import DigitsMLPFeatures

    loop = _loop(cache_dir=str(tmp_path / "cache"), metric_samples=24)
    real = loop.real_data(stream(0, -1, "real"))
    mu, sigma, subset = loop._reference()
    feats = DigitsMLPFeatures()(loop._data)
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats.T), rtol=1e-10, atol=1e-14)
    files = list((tmp_path / "cache").glob("reference-*.npz"))
    assert len(files) == 1
    clear_caches()

    def refuse(self, images):
        raise AssertionError("the reference must come from the disk cache")

    monkeypatch.setattr(DigitsMLPFeatures, "__call__", refuse)
    again = _loop(cache_dir=str(tmp_path / "cache"), metric_samples=24)
    again.real_data(stream(0, -1, "real"))
    mu2, sigma2, subset2 = again._reference()
    assert np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    assert np.array_equal(subset, subset2)
    other_size = _loop(cache_dir=str(tmp_path / "cache"), metric_samples=24, image_size=16)
    other_size.real_data(stream(0, -1, "real"))
    with pytest.raises(AssertionError, match="disk cache"):
        other_size._reference()  # another image size: another key
    del real


def test_timing_csv_reports_each_phase(tmp_path):
    loop = _loop(artifacts_dir=str(tmp_path))
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))
    loop.metrics(s0, stream(0, 0, "metrics"))
    synth = loop.generate(s0, 24, stream(0, 1, "generate"))
    s1 = loop.fit(torch.cat([real, synth]), s0, stream(0, 1, "fit"))
    loop.metrics(s1, stream(0, 1, "metrics"))
    rows = list(csv.DictReader(open(tmp_path / "timing.csv")))
    assert [r["generation"] for r in rows] == ["0", "1"]
    assert rows[0]["seconds_sample"] == ""  # generation 0 trains on real data only
    for r in rows:
        assert float(r["seconds_train"]) >= 0 and float(r["seconds_metrics"]) > 0
    assert float(rows[1]["seconds_sample"]) > 0
