"""The torch side of the policy, imported only when fitting: the module that computes a
:class:`~stabfw.domains.rl.policy.PolicySpec`'s function, and behaviour cloning with Adam."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from stabfw.domains.rl.policy import LOG_STD_BOUNDS, PolicySpec

__all__ = ["PolicyModule", "fit_bc", "policy_module"]


class PolicyModule(nn.Module):
    """The MLP of a :class:`PolicySpec`; parameters in θ's order (W then b per layer).

    Weights are stored as (in, out) and registered in θ's order, so that
    ``parameters_to_vector`` gives θ's layout.
    """

    def __init__(self, spec: PolicySpec):
        super().__init__()
        self.spec = spec
        s = spec.sizes
        self.layers = nn.ParameterList()
        for a, b in itertools.pairwise(s):
            self.layers.append(nn.Parameter(torch.zeros(a, b)))
            self.layers.append(nn.Parameter(torch.zeros(b)))
        if not spec.discrete:  # in the same list: a module's own parameters come first
            self.layers.append(nn.Parameter(torch.zeros(spec.n_out)))
        self.n_linear = len(s) - 1
        self.register_buffer("shift", torch.as_tensor(np.asarray(spec.obs_shift, np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(spec.obs_scale, np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = (obs - self.shift) / self.scale
        n = self.n_linear
        for k in range(n):
            h = h @ self.layers[2 * k] + self.layers[2 * k + 1]
            if k < n - 1:
                h = torch.tanh(h)
        return h

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π(a | s) per row."""
        out = self(obs)
        if self.spec.discrete:
            return torch.log_softmax(out, dim=1).gather(1, act.view(-1, 1)).squeeze(1)
        log_std = self.layers[2 * self.n_linear].clamp(*LOG_STD_BOUNDS)
        z = (act.view_as(out) - out) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(dim=1)


def policy_module(spec: PolicySpec, theta: np.ndarray) -> PolicyModule:
    """A ``torch.nn.Module`` holding ``theta`` (float32), computing the spec's function."""
    module = PolicyModule(spec)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.as_tensor(np.asarray(theta, dtype=np.float32)), module.parameters())
    return module


def fit_bc(
    spec: PolicySpec,
    obs: np.ndarray,
    act: np.ndarray,
    theta0: np.ndarray,
    rng: np.random.Generator,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
) -> np.ndarray:
    """Maximum-likelihood behaviour cloning: minimise −mean log π_θ(a | s) with Adam.

    Parameters
    ----------
    spec : PolicySpec
    obs, act : numpy.ndarray
        The training pairs.
    theta0 : numpy.ndarray
        Where the optimisation starts (a fresh init, or the previous generation).
    rng : numpy.random.Generator
        Draws the minibatch order; nothing else is random.
    epochs, batch_size, lr, weight_decay
        Adam settings; a new optimiser is made for every fit.

    Returns
    -------
    numpy.ndarray
        The fitted θ (float64 holding float32 values).

    References
    ----------
    Kingma & Ba, ICLR 2015 (Adam).
    """
    module = policy_module(spec, theta0)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    X = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    A = torch.as_tensor(np.asarray(act, dtype=np.int64 if spec.discrete else np.float32))
    n = X.shape[0]
    bs = min(batch_size, n)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n))
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss = -module.log_prob(X[idx], A[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        flat = torch.nn.utils.parameters_to_vector(module.parameters())
    return flat.numpy().astype(np.float64)
