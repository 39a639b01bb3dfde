"""The protocol of differentiable domains, and their retraining objective in torch.

A domain that also implements three methods lets :class:`stabfw.JacobianAnalyzer` use the
``dense`` and ``implicit`` methods (autodiff of the retraining map and the implicit
function theorem):

``loss(theta, data)``
    The training objective of ``data`` at parameters ``theta`` as a torch scalar: a
    *mean* over the samples of ``data`` (plus, optionally, a penalty that does not depend
    on the data), twice differentiable in ``theta`` and once in ``data``. ``fit`` must
    minimise exactly this. ``data`` is a torch tensor of samples or the domain's own real
    data container.
``sample(theta, noise)``
    Reparameterised samples: a torch tensor, differentiable in ``theta``.
``draw_noise(n, rng)``
    The noise of ``n`` samples, drawn from a numpy ``Generator``; ``generate(state, n,
    rng)`` must equal ``sample(params(state), draw_noise(n, rng))`` so that the analyzers
    and the loop see the same synthetic points (common random numbers).

θ is always the domain's ``params`` vector; the analyzers move it to a float64 tensor.

Because every loss is a mean, the objective of a mixed training set of n real and m
synthetic points is ``(n·loss(θ', real) + m·loss(θ', sample(θ, noise))) / (n + m)``
(:class:`MixedObjective`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stabfw.core.capabilities import DIFFERENTIABLE_METHODS

__all__ = [
    "DifferentiableLoop",
    "MixedObjective",
    "is_differentiable",
    "math_attention",
    "require_differentiable",
]


@runtime_checkable
class DifferentiableLoop(Protocol):
    """A loop whose training objective and sampler are differentiable torch functions."""

    def loss(self, theta: Any, data: Any) -> Any:
        """Mean training loss of ``data`` at ``theta`` (a torch scalar)."""

    def sample(self, theta: Any, noise: Any) -> Any:
        """Reparameterised samples from the model at ``theta`` (torch, differentiable)."""

    def draw_noise(self, n: int, rng: np.random.Generator) -> Any:
        """Noise for ``n`` samples."""


def is_differentiable(loop: Any) -> bool:
    """Whether ``loop`` implements ``loss``, ``sample`` and ``draw_noise``
    (``loop.capabilities().differentiable``)."""
    return bool(loop.capabilities().differentiable)


def require_differentiable(loop: Any, method: str) -> None:
    """Raise a clear error when ``method`` needs the differentiable protocol."""
    if not is_differentiable(loop):
        missing = [n for n in DIFFERENTIABLE_METHODS if not callable(getattr(loop, n, None))]
        raise TypeError(
            f"JacobianAnalyzer(method={method!r}) needs a differentiable domain: "
            f"{type(loop).__name__} lacks {', '.join(missing)} (see stabfw.core.differentiable); "
            "use method='finite_difference' or 'empirical' for black-box learners")


@contextmanager
def math_attention():
    """Run attention with the math SDPA kernel, the only one with a double backward.

    Hessian-vector products differentiate twice; the fused (flash / memory-efficient)
    scaled-dot-product-attention kernels have no second derivative.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


@dataclass
class MixedObjective:
    """``H(θ', θ) = w_real·loss(θ', real) + w_syn·loss(θ', sample(θ, noise))``.

    Parameters
    ----------
    loop : DifferentiableLoop
    real : data or None
        The real training points (``None`` in a fully synthetic loop).
    noise : noise of the synthetic points (from ``draw_noise``)
    w_real, w_syn : float
        Shares of real and synthetic points in the training set (they sum to 1).
    """

    loop: Any
    real: Any
    noise: Any
    w_real: float
    w_syn: float

    def __call__(self, theta_fit, theta_gen):
        total = 0.0
        if self.w_real > 0 and self.real is not None:
            total = self.w_real * self.loop.loss(theta_fit, self.real)
        if self.w_syn > 0:
            synthetic = self.loop.sample(theta_gen, self.noise)
            total = total + self.w_syn * self.loop.loss(theta_fit, synthetic)
        return total

    def grad_fit(self, theta_fit, theta_gen):
        """∇_θ' H (torch)."""
        import torch

        return torch.func.grad(self.__call__, argnums=0)(theta_fit, theta_gen)
