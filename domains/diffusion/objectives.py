"""Training objectives on one UNet: DDPM (ε-prediction) and EDM (preconditioned denoiser).

Both expose the same three pieces so that the trainer, the samplers and the
differentiable protocol share them:

* ``draw(n, generator, device)`` — the per-sample auxiliary draw (a timestep for DDPM,
  a standard normal that becomes log σ for EDM);
* ``loss(net, x0, eps, aux)`` — the mean training loss given every random input, so it
  is a deterministic function of the weights (what the implicit Jacobian needs);
* the network call convention ``net(x, t) -> tensor``.

References
----------
Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (the simple
ε-prediction loss). Karras, Aittala, Aila & Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS 2022 (EDM: Table 1 preconditioning,
log-normal σ, loss weighting λ(σ) = (σ² + σ_d²)/(σ σ_d)²).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DDPMObjective", "EDMObjective", "make_objective"]


def _wide(x):
    """At least fp32 (a bf16 autocast output is widened; fp64 stays fp64)."""
    return x.float() if x.dtype.itemsize < 4 else x


@dataclass(frozen=True)
class DDPMObjective:
    """Ho et al.'s ε-prediction loss with diffusers' ``DDPMScheduler`` noise schedule.

    ``loss = E_{t, ε} ‖ε̂(√ᾱ_t x₀ + √(1 − ᾱ_t) ε, t) − ε‖²`` with t uniform on
    ``0 … T − 1``. ``alphas_cumprod`` is ᾱ_t (float32 CPU tensor of length T) from
    diffusers' ``DDPMScheduler``, built at construction.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    kind: str = "ddpm"
    alphas_cumprod: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # built here, not lazily on first use: a lazy build inside the compiled training
        # step breaks its graph (a diffusers import and a Python-side cache)
        from diffusers import DDPMScheduler

        ac = DDPMScheduler(**self.scheduler_config()).alphas_cumprod.clone()
        object.__setattr__(self, "alphas_cumprod", ac)

    def scheduler_config(self) -> dict[str, Any]:
        """Keyword arguments shared by the DDPM and DDIM schedulers of this objective."""
        return dict(num_train_timesteps=self.num_train_timesteps,
                    beta_schedule=self.beta_schedule, prediction_type="epsilon",
                    clip_sample=True, clip_sample_range=1.0)

    def draw(self, n: int, generator, device):
        import torch

        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator,
                             device=device)

    def loss(self, net, x0, eps, aux):
        """Mean ε-prediction loss; ``aux`` holds the integer timesteps."""
        ac = self.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[aux].view(-1, 1, 1, 1)
        xt = ac.sqrt() * x0 + (1.0 - ac).sqrt() * eps
        pred = net(xt, aux)
        return (_wide(pred) - _wide(eps)).pow(2).mean()


@dataclass(frozen=True)
class EDMObjective:
    """Karras et al.'s EDM: preconditioned denoiser, log-normal σ, λ(σ)-weighted loss.

    ``D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ))`` with
    ``c_skip = σ_d²/(σ² + σ_d²)``, ``c_out = σ σ_d/√(σ² + σ_d²)``,
    ``c_in = 1/√(σ² + σ_d²)``, ``c_noise = ¼ ln σ``; training draws
    ``ln σ ~ N(P_mean, P_std²)`` and weights the squared error by
    ``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``.
    """

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    kind: str = "edm"

    def precondition(self, sigma):
        """``(c_skip, c_out, c_in, c_noise)`` for a tensor of σ."""
        sd2 = self.sigma_data ** 2
        s2 = sigma ** 2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1.0 / (s2 + sd2).sqrt()
        c_noise = sigma.log() / 4.0
        return c_skip, c_out, c_in, c_noise

    def weight(self, sigma):
        """λ(σ) = (σ² + σ_d²)/(σ σ_d)²."""
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def denoise(self, net, x, sigma):
        """D(x; σ) for a batch ``x`` and σ of shape ``(n,)`` (or a scalar tensor)."""
        import torch

        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) if c.ndim else c
                                        for c in self.precondition(sigma))
        out = net(c_in * x, c_noise.reshape(-1))
        return c_skip * x + c_out * out.to(x.dtype)

    def draw(self, n: int, generator, device):
        import torch

        return torch.randn(n, generator=generator, device=device)

    def loss(self, net, x0, eps, aux):
        """Mean of λ(σ)‖D(x₀ + σε; σ) − x₀‖²; ``aux`` holds standard normals for ln σ."""
        sigma = (aux.to(x0.dtype) * self.p_std + self.p_mean).exp()
        y = x0 + sigma.view(-1, 1, 1, 1) * eps
        d = self.denoise(net, y, sigma)
        w = self.weight(sigma).view(-1, 1, 1, 1)
        return (w * (_wide(d) - _wide(x0)).pow(2)).mean()

    def sigmas(self, steps: int, device=None):
        """Karras et al.'s σ schedule: ``steps`` levels from σ_max to σ_min, then 0 (eq. 5)."""
        import torch

        if steps < 1:
            raise ValueError("sampling_steps must be ≥ 1")
        i = torch.arange(steps, dtype=torch.float64)
        inv = 1.0 / self.rho
        denom = max(steps - 1, 1)
        s = (self.sigma_max ** inv + i / denom * (self.sigma_min ** inv - self.sigma_max ** inv)
             ) ** self.rho
        return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).to(device)


def make_objective(kind: str, params: dict[str, Any] | None = None):
    """Build an objective from its name and optional parameters (field names checked)."""
    import dataclasses

    cls = {"ddpm": DDPMObjective, "edm": EDMObjective}.get(kind)
    if cls is None:
        raise ValueError(f"domain.objective: unknown objective {kind!r}; accepted: ddpm, edm")
    params = dict(params or {})
    allowed = {f.name for f in dataclasses.fields(cls) if f.init} - {"kind"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"domain.objective_params: unknown key(s) {unknown} for {kind!r}; "
                         f"accepted: {', '.join(sorted(allowed))}")
    obj = cls(**params)
    if kind == "edm" and not (0 < obj.sigma_min < obj.sigma_max and obj.sigma_data > 0
                              and obj.p_std > 0 and obj.rho > 0):
        raise ValueError("domain.objective_params: need 0 < sigma_min < sigma_max, "
                         "sigma_data > 0, p_std > 0 and rho > 0")
    if kind == "ddpm" and obj.num_train_timesteps < 2:
        raise ValueError("domain.objective_params.num_train_timesteps must be ≥ 2")
    return obj
