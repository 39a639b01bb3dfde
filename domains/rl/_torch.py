"""The torch side of the policy (imported only when fitting)."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from stabfw.domains.rl.policy import LOG_STD_BOUNDS, PolicySpec
from torch import nn

__all__ = ["PolicyModule"]


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
