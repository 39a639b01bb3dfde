"""DiffusionLoop on CPU with a tiny UNet: the loop contract, determinism, θ, options, the
differentiable protocol and configuration errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.core.checks import check_loop  # noqa: E402
from stabfw.core.streams import stream  # noqa: E402
from stabfw.domains.diffusion import DiffusionLoop, clear_caches  # noqa: E402

TINY = dict(DiffusionLoop.test_params, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    clear_caches()


def _loop(**kw) -> DiffusionLoop:
    return DiffusionLoop(**{**TINY, **kw})


def test_check_loop_passes():
    check_loop(_loop())


def test_fit_and_generate_are_deterministic_under_a_seed():
    global_rng = torch.get_rng_state()
    loop = _loop(ema_decay=0.9)
    real = loop.real_data(stream(0, -1, "real"))
    assert real.dtype == torch.uint8 and tuple(real.shape) == (48, 1, 8, 8)
    a = loop.fit(real, None, stream(0, 0, "fit"))
    clear_caches()  # no cached fit: train again from scratch
    b = loop.fit(real, None, stream(0, 0, "fit"))
    np.testing.assert_array_equal(loop.params(a), loop.params(b))
    c = loop.fit(real, None, stream(1, 0, "fit"))
    assert not np.array_equal(loop.params(a), loop.params(c))
    x1 = loop.generate(a, 5, stream(0, 1, "generate"))
    x2 = loop.generate(b, 5, stream(0, 1, "generate"))
    assert x1.dtype == torch.uint8 and tuple(x1.shape) == (5, 1, 8, 8)
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, loop.generate(a, 5, stream(0, 2, "generate")))
    # batching: the same draws whether sampled in one batch or several (no compile)
    assert torch.equal(_loop(sample_batch_size=2).generate(a, 5, stream(0, 1, "generate"))[:2],
                       x1[:2])
    assert loop.generate(a, 0, stream(0, 1, "generate")).shape[0] == 0
    assert torch.equal(torch.get_rng_state(), global_rng)  # draws only from the given rng


def test_warm_start_continues_the_lineage_and_leaves_init_alone():
    loop = _loop()
    real = loop.real_data(stream(0, -1, "real"))
    s0 = loop.fit(real, None, stream(0, 0, "fit"))
    before = loop.params(s0).copy()
    s1 = loop.fit(real, s0, stream(0, 1, "fit"))
    np.testing.assert_array_equal(loop.params(s0), before)
    assert (s0.generation, s1.generation) == (0, 1)
    assert s1.steps == TINY["train_steps"] + TINY["finetune_steps"]
    assert not np.array_equal(loop.params(s1), before)
    frozen = _loop(finetune_steps=0).fit(real, s0, stream(0, 1, "fit"))
    np.testing.assert_array_equal(loop.params(frozen), before)
    assert math.isnan(frozen.train_loss)


def test_params_round_trip_and_state_is_small_and_picklable():
    loop = _loop()
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    theta = loop.params(s)
    assert theta.ndim == 1 and theta.size == loop.param_count() and theta.dtype == np.float32
    moved = loop.with_params(s, theta + 0.5)
    np.testing.assert_allclose(loop.params(moved), theta + 0.5, rtol=0, atol=1e-6)
    # θ is the EMA (the sampling weights) when EMA is on
    from stabfw.domains.diffusion.models import flatten_state

    np.testing.assert_array_equal(theta, flatten_state(s.ema))
    blob = pickle.dumps(s)
    assert len(blob) < 3 * 4 * theta.size + 100_000  # weights + EMA, nothing compiled
    with pytest.raises(ValueError, match="entries"):
        loop.with_params(s, theta[:-1])


def test_probe_theta_is_a_functional_signature():
    loop = _loop(representation="probe")
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    theta = loop.params(s)
    assert theta.shape == (4 * 8 * 1 * 8 * 8,)
    np.testing.assert_array_equal(theta, loop.params(s))
    with pytest.raises(NotImplementedError, match="representation: weights"):
        loop.with_params(s, theta)


def test_edm_objective_with_heun_sampler_runs():
    loop = _loop(objective="edm")
    assert loop.nfe_per_image == 2 * TINY["sampling_steps"] - 1
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    assert np.isfinite(s.train_loss)
    x = loop.generate(s, 4, stream(0, 1, "generate"))
    assert tuple(x.shape) == (4, 1, 8, 8)
    m = loop.metrics(s, stream(0, 0, "metrics"))
    assert m["nfe_per_image"] == 3.0 and "fd_digits_mlp" in m


def test_ddpm_ancestral_sampler_and_16px_images():
    loop = _loop(sampler="ddpm", image_size=16)
    real = loop.real_data(stream(0, -1, "real"))
    assert tuple(real.shape[1:]) == (1, 16, 16)
    s = loop.fit(real, None, stream(0, 0, "fit"))
    x = loop.generate(s, 3, stream(0, 1, "generate"))
    assert tuple(x.shape) == (3, 1, 16, 16)


def test_metrics_without_features_and_metric_names():
    loop = _loop(metric_features="none")
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    assert set(loop.metrics(s, stream(0, 0, "metrics"))) == {"train_loss", "nfe_per_image"}
    m = _loop().metrics(s, stream(0, 0, "metrics"))
    assert {"fd_digits_mlp", "precision_digits_mlp", "recall_digits_mlp",
            "confidence_digits_mlp"} <= set(m)
    assert not any(k in m for k in ("fid", "precision", "recall"))  # never called FID


def test_grids_are_named_by_seed_and_generation(tmp_path):
    loop = _loop(grid_size=4, artifacts_dir=str(tmp_path))
    real = loop.real_data(stream(3, -1, "real"))
    s = loop.fit(real, None, stream(3, 0, "fit"))
    loop.metrics(s, stream(3, 0, "metrics"))
    s1 = loop.fit(real, s, stream(3, 1, "fit"))
    loop.metrics(s1, stream(3, 1, "metrics"))
    folder = tmp_path / "samples" / "seed3"
    assert (folder / "gen000.png").is_file() and (folder / "gen001.png").is_file()
    assert (tmp_path / "samples" / "seed3.png").is_file()
    assert (tmp_path / "digits_mlp.npz").is_file()


def test_runtime_options_resolve_and_gpu_paths_run_on_cpu():
    from stabfw.domains.diffusion.runtime import resolve_runtime

    rt = resolve_runtime("cpu")
    assert (rt.bf16, rt.channels_last, rt.compile_mode, rt.fused_adam) == (False, False, None,
                                                                           False)
    forced = resolve_runtime("cpu", "bf16", True, "reduce-overhead", True)
    assert forced.bf16 and forced.channels_last and forced.fused_adam
    assert forced.compile_mode == "default"  # CUDA graphs need CUDA
    with pytest.raises(ValueError, match=r"domain\.compile"):
        resolve_runtime("cpu", compile="fast")
    with pytest.raises(ValueError, match=r"domain\.precision"):
        resolve_runtime("cpu", precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_runtime("cuda")
    # bf16 autocast + channels_last + fused AdamW, eager, on CPU
    loop = _loop(precision="bf16", channels_last=True, fused_adam=True)
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    assert np.all(np.isfinite(loop.params(s))) and np.isfinite(s.train_loss)
    x = loop.generate(s, 3, stream(0, 1, "generate"))
    assert tuple(x.shape) == (3, 1, 8, 8)


@pytest.mark.slow
def test_torch_compile_path_on_cpu():
    """The compiled training and sampling code (inductor on CPU; minutes)."""
    loop = _loop(compile="default", sample_batch_size=4)
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    assert np.all(np.isfinite(loop.params(s)))
    eager = _loop()
    clear_caches()
    s_eager = eager.fit(real, None, stream(0, 0, "fit"))
    # Adam's first steps are sign steps: round-off in tiny gradients becomes lr-sized
    # differences, so compare the losses loosely and the loss functions exactly
    assert s.train_loss == pytest.approx(s_eager.train_loss, rel=0.05)
    g = torch.Generator().manual_seed(0)
    x = real[:16]
    flip = torch.zeros(16, dtype=torch.bool)
    eps = torch.randn(x.shape, generator=g)
    aux = loop._objective.draw(16, g, "cpu")
    losses = []
    for lp in (loop, eager):
        ws = lp._workspace()
        ws.train_model(s.weights)
        with torch.no_grad():
            losses.append(ws.train_loss()(x, flip, eps, aux).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    x = loop.generate(s, 6, stream(0, 1, "generate"))  # pads the last batch to 4
    assert tuple(x.shape) == (6, 1, 8, 8)


def test_differentiable_protocol():
    loop = _loop()
    real = loop.real_data(stream(0, -1, "real"))
    s = loop.fit(real, None, stream(0, 0, "fit"))
    theta = torch.tensor(loop.params(s), dtype=torch.float64, requires_grad=True)
    batch = real[:6]
    loss = loop.loss(theta, batch)
    assert loss.ndim == 0 and loss.dtype == torch.float64
    assert loop.loss(theta, batch).item() == loss.item()  # common random numbers
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    # directional derivative against a central finite difference
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm()
    h = 1e-4
    with torch.no_grad():
        fd = (loop.loss(theta + h * v, batch) - loop.loss(theta - h * v, batch)) / (2 * h)
    assert (grad @ v).item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-8)
    # Hessian-vector product: a double backward through the UNet (math attention) ...
    (hv,) = torch.autograd.grad(grad @ v, theta)
    assert torch.isfinite(hv).all() and hv.norm() > 0
    # ... and forward-over-reverse (torch.func), as the implicit Jacobian's Newton step uses
    th = theta.detach()
    hv_fwd = torch.func.jvp(lambda a: torch.func.grad(lambda b: loop.loss(b, batch))(a),
                            (th,), (v,))[1]
    torch.testing.assert_close(hv_fwd, hv, rtol=1e-6, atol=1e-8)
    # a fresh loop whose first call comes inside a torch.func transform
    fresh = _loop()
    g_fresh = torch.func.grad(lambda a: fresh.loss(a, batch))(th)
    torch.testing.assert_close(g_fresh, grad.detach())
    # reparameterised sampling, differentiable in θ, matches the loop's own sampler
    noise = loop.draw_noise(3, np.random.default_rng(0))
    x = loop.sample(theta, noise)
    assert tuple(x.shape) == (3, 1, 8, 8) and x.dtype == torch.float64
    from stabfw.domains.diffusion import samplers

    net = loop._workspace().sample_net(s.sampling_weights)
    ref = samplers.sample(net, loop._objective, loop._sampler, loop.sampling_steps, noise.float())
    torch.testing.assert_close(x.float(), ref, atol=1e-4, rtol=1e-4)
    # the analyzers' contract: generate = sample(params, draw_noise), here up to uint8
    from stabfw.domains.diffusion.data import to_uint8

    gen = loop.generate(s, 3, np.random.default_rng(0))
    assert torch.equal(gen, to_uint8(x.detach()))
    (g_sample,) = torch.autograd.grad(x.sum(), theta)
    assert torch.isfinite(g_sample).all() and g_sample.norm() > 0
    # the C term: the loss on samples, differentiated through the sampler
    (c,) = torch.autograd.grad(loop.loss(theta.detach(), loop.sample(theta, noise)), theta)
    assert torch.isfinite(c).all()


def test_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match=r"domain.sampler='edm-heun' does not fit"):
        _loop(sampler="edm-heun").real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match="n_real=5000 exceeds the 1797"):
        _loop(n_real=5000).real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match="data_dir is required"):
        _loop(dataset="cifar10").real_data(stream(0, -1, "real"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        _loop(dataset="cifar10", data_dir=str(tmp_path / "x")).real_data(stream(0, -1, "real"))
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        _loop(metric_features="inception",
              inception_weights=str(tmp_path / "none.pt")).real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match=r"domain\.ema_decay"):
        _loop(ema_decay=1.0).real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match=r"domain\.model: unknown preset"):
        DiffusionLoop(model="huge").real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match="divisible by 4"):
        _loop(model="small", image_size=6).real_data(stream(0, -1, "real"))
    with pytest.raises(ValueError, match="uint8 images"):
        loop = _loop()
        loop.fit(torch.zeros(4, 1, 8, 8), None, stream(0, 0, "fit"))


def test_registry_validates_parameters():
    from stabfw.errors import ConfigError
    from stabfw.run import registry

    assert registry.get("diffusion") is DiffusionLoop
    with pytest.raises(ConfigError, match=r"domain\.sampler"):
        registry.validate_params("diffusion", {"sampler": "euler"})
    with pytest.raises(ConfigError, match=r"domain\.bogus"):
        registry.validate_params("diffusion", {"bogus": 1})


def test_init_checkpoint_from_safetensors_and_diffusers_dir(tmp_path):
    from safetensors.torch import save_file

    loop = _loop(train_steps=0)
    real = loop.real_data(stream(0, -1, "real"))
    trained = _loop().fit(real, None, stream(0, 0, "fit"))
    save_file(trained.weights, str(tmp_path / "w.safetensors"))
    from_file = _loop(train_steps=0, init_checkpoint=str(tmp_path / "w.safetensors"),
                      ema_decay=0.0)
    s = from_file.fit(real, None, stream(0, 0, "fit"))
    from stabfw.domains.diffusion.models import flatten_state

    np.testing.assert_array_equal(from_file.params(s), flatten_state(trained.weights))
    model = loop._build()
    model.load_state_dict(trained.weights)
    model.save_pretrained(str(tmp_path / "unet"))
    from_dir = _loop(train_steps=0, init_checkpoint=str(tmp_path / "unet"), ema_decay=0.0)
    np.testing.assert_array_equal(from_dir.params(from_dir.fit(real, None, stream(0, 0, "fit"))),
                                  flatten_state(trained.weights))
    wrong = _loop(model="small", init_checkpoint=str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="does not fit the configured UNet"):
        wrong.fit(real, None, stream(0, 0, "fit"))
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        _loop(init_checkpoint=str(tmp_path / "nothing")).fit(real, None, stream(0, 0, "fit"))
