"""Objectives and samplers against closed forms (Gaussian data, exact denoisers) and
against diffusers' own schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from stabfw.domains.diffusion import samplers  # noqa: E402
from stabfw.domains.diffusion.objectives import DDPMObjective, EDMObjective, make_objective  # noqa: E402

S = 0.3  # std of the 1-D Gaussian "data"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _exact_eps_net(obj: DDPMObjective, s: float = S):
    """E[ε | x_t] for data N(0, s²): √(1 − ᾱ) x_t / (ᾱ s² + 1 − ᾱ)."""
    ac = obj.alphas_cumprod.double()

    def net(x, t):
        a = ac[t].view(-1, 1, 1, 1).to(x.dtype)
        return (1 - a).sqrt() * x / (a * s**2 + 1 - a)

    return net


def _exact_edm_net(obj: EDMObjective, s: float = S):
    """The raw network F whose preconditioned D(x; σ) is the exact s²/(s² + σ²) x."""

    def net(x_in, c_noise):
        sigma = (4 * c_noise).exp().view(-1, 1, 1, 1).to(x_in.dtype)
        c_skip, c_out, c_in, _ = obj.precondition(sigma)
        x = x_in / c_in
        d = s**2 / (s**2 + sigma**2) * x
        return (d - c_skip * x) / c_out

    return net


def test_edm_sigmas_match_diffusers():
    from diffusers import EDMEulerScheduler

    obj = EDMObjective()
    ref = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_schedule="karras")
    ref.set_timesteps(18)
    np.testing.assert_allclose(obj.sigmas(18).numpy(), ref.sigmas.numpy(), rtol=1e-5)


def test_edm_preconditioning_matches_diffusers():
    from diffusers import EDMEulerScheduler

    obj = EDMObjective()
    ref = EDMEulerScheduler(sigma_data=0.5)
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0], dtype=torch.float64)
    x = torch.linspace(-1, 1, 4, dtype=torch.float64).view(4, 1, 1, 1)
    c_skip, c_out, c_in, c_noise = obj.precondition(sigma)
    torch.testing.assert_close(c_in.view(-1, 1, 1, 1) * x,
                               ref.precondition_inputs(x, sigma.view(-1, 1, 1, 1)))
    torch.testing.assert_close(c_noise, ref.precondition_noise(sigma))
    f = torch.full_like(x, 0.7)
    torch.testing.assert_close(c_skip.view(-1, 1, 1, 1) * x + c_out.view(-1, 1, 1, 1) * f,
                               ref.precondition_outputs(x, f, sigma.view(-1, 1, 1, 1)))


def test_edm_loss_is_one_for_the_exact_denoiser():
    # with σ_data = s, λ(σ)·Var(x₀ | x₀ + σε) = 1 for every σ: the loss's expectation is 1
    obj = EDMObjective(sigma_data=S)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = S * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    aux = obj.draw(n, g, "cpu").double()
    assert obj.loss(_exact_edm_net(obj), x0, eps, aux).item() == pytest.approx(1.0, abs=0.02)


def test_ddpm_loss_matches_closed_form_for_the_exact_predictor():
    # E‖ε̂ − ε‖² = Var(ε | x_t) = ᾱ s² / (ᾱ s² + 1 − ᾱ), averaged over uniform t
    obj = DDPMObjective()
    ac = obj.alphas_cumprod.double()
    want = float((ac * S**2 / (ac * S**2 + 1 - ac)).mean())
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = S * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    t = obj.draw(n, g, "cpu")
    got = obj.loss(_exact_eps_net(obj), x0, eps, t).item()
    assert got == pytest.approx(want, rel=0.02)


def _ode_map_ddpm(obj, noise, first_t):
    a = float(obj.alphas_cumprod[first_t])
    return noise * S / math.sqrt(a * S**2 + 1 - a)


def test_ddim_follows_the_probability_flow_ode():
    """DDIM is Euler on the probability-flow ODE: first-order convergence to the exact map."""
    obj = DDPMObjective()
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(64, 1, 1, 1, generator=g, dtype=torch.float64)
    errors = []
    for steps in (250, 1000):
        out = samplers.sample(_exact_eps_net(obj), obj, "ddim", steps, noise)
        first_t = samplers._ddim_scheduler(obj, steps).timesteps[0].item()
        exact = _ode_map_ddpm(obj, noise, first_t)
        errors.append(((out - exact).abs() / exact.abs()).max().item())
    assert errors[1] < 0.01
    assert 3.0 < errors[0] / errors[1] < 5.0  # error ∝ 1/steps


def test_edm_heun_is_second_order_and_euler_first_order():
    obj = EDMObjective()
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(64, 1, 1, 1, generator=g, dtype=torch.float64)
    # the exact flow of N(0, s²) data: x(σ) ∝ √(s² + σ²)
    exact = noise * 80.0 * S / math.sqrt(S**2 + 80.0**2)
    net = _exact_edm_net(obj)

    def error(sampler, steps):
        out = samplers.sample(net, obj, sampler, steps, noise)
        return ((out - exact).abs() / exact.abs()).max().item()

    heun = [error("edm-heun", n) for n in (36, 72)]
    euler = [error("ddim", n) for n in (36, 72)]
    assert heun[1] < 0.005
    assert 3.0 < heun[0] / heun[1] < 6.0   # halving the step divides the error by ~4
    assert 1.6 < euler[0] / euler[1] < 2.5  # ... and by ~2 for Euler (= DDIM)
    assert error("edm-heun", 18) < error("ddim", 18) / 2


def test_ddpm_sampler_equals_diffusers_ddpm_scheduler():
    """Our ancestral sampler (DDIM η = 1 with given noise) is diffusers' DDPMScheduler."""
    from diffusers import DDPMScheduler

    obj = DDPMObjective()
    steps, shape = 25, (6, 1, 2, 2)

    def net(x, t):  # x̂₀ leaves [-1, 1] often, which exercises the clipping
        return 0.8 * x + 0.3 * torch.sin(x * 3) + 1e-3 * t.view(-1, 1, 1, 1).to(x.dtype)

    ref_sched = DDPMScheduler(**obj.scheduler_config())
    ref_sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=g)
    for t in ref_sched.timesteps.tolist():
        x = ref_sched.step(net(x, torch.full((shape[0],), t)), t, x, generator=g).prev_sample
    # the same draws, in the layout of draw_noise: initial noise, then one per step
    g = torch.Generator().manual_seed(4)
    z = [torch.randn(shape, generator=g)]
    for t in ref_sched.timesteps.tolist():
        z.append(torch.randn(shape, generator=g) if t > 0 else torch.zeros(shape))
    noise = torch.stack(z, dim=1)
    ours = samplers.sample(net, obj, "ddpm", steps, noise)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_nfe_counts_network_calls():
    calls = []

    def counting(inner):
        def net(x, t):
            calls.append(1)
            return inner(x, t)
        return net

    for kind, sampler, steps in [("ddpm", "ddim", 7), ("ddpm", "ddpm", 5), ("edm", "ddim", 6),
                                 ("edm", "edm-heun", 18)]:
        obj = make_objective(kind)
        inner = _exact_eps_net(obj) if kind == "ddpm" else _exact_edm_net(obj)
        calls.clear()
        noise = samplers.draw_noise(sampler, steps, 3, (1, 2, 2), torch.Generator().manual_seed(0))
        samplers.sample(counting(inner), obj, sampler, steps, noise.double())
        assert len(calls) == samplers.nfe(sampler, steps)
    assert samplers.nfe("edm-heun", 18) == 35


def test_draw_noise_shapes():
    g = torch.Generator().manual_seed(0)
    assert tuple(samplers.draw_noise("ddim", 10, 4, (3, 8, 8), g).shape) == (4, 3, 8, 8)
    assert tuple(samplers.draw_noise("ddpm", 10, 4, (3, 8, 8), g).shape) == (4, 11, 3, 8, 8)


def test_sampler_objective_mismatch_errors():
    with pytest.raises(ValueError, match=r"domain.sampler='edm-heun' does not fit"):
        samplers.check_sampler("ddpm", "edm-heun", 10)
    with pytest.raises(ValueError, match=r"domain.sampler='ddpm' does not fit"):
        samplers.check_sampler("edm", "ddpm", 10)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.check_sampler("edm", "euler-a", 10)
    with pytest.raises(ValueError, match="sampling_steps"):
        samplers.check_sampler("edm", "edm-heun", 0)


def test_objective_params_validation():
    with pytest.raises(ValueError, match="unknown key"):
        make_objective("edm", {"sigma_dat": 0.5})
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        make_objective("edm", {"sigma_min": 5.0, "sigma_max": 1.0})
    with pytest.raises(ValueError, match="accepted: ddpm, edm"):
        make_objective("flow")
    assert make_objective("ddpm", {"num_train_timesteps": 100}).alphas_cumprod.shape == (100,)


def test_ema_update_and_warmup():
    from stabfw.domains.diffusion.ema import ema_decay, ema_update

    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 10**6) == 0.999
    e, p = [torch.zeros(3)], [torch.ones(3)]
    ema_update(e, p, 0.75)
    torch.testing.assert_close(e[0], torch.full((3,), 0.25))
