"""Toy 2-D densities fitted by a small normalizing flow (affine couplings, exact likelihood).

Real data are drawn in code from one of the standard 2-D toy densities (two moons, eight
Gaussians, checkerboard, rings). The model is a RealNVP-style flow: an element-wise affine
layer followed by ``layers`` affine coupling layers that alternate the transformed
coordinate; each coupling is conditioned on the other coordinate through a one-hidden-layer
tanh network. The log-likelihood is exact and sampling is an explicit inverse, so the
domain implements the differentiable protocol of :mod:`stabfw.differentiable`
(``loss``, ``sample``, ``draw_noise``) and every Jacobian method of
:class:`stabfw.JacobianAnalyzer` runs on it, ``dense`` and ``implicit`` included.

θ is the flat float64 vector of all flow parameters; the flow is a pure function of θ
(no ``nn.Module``), which keeps ``torch.func`` transforms simple. ``fit`` is full-batch
L-BFGS (strong-Wolfe line search, float64) to a gradient tolerance, warm-started from the
previous generation, so each generation is an accurate arg-min of the mean negative
log-likelihood of its training set — what the implicit-function-theorem Jacobian assumes.

References
----------
Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (affine
coupling layers). Kingma & Dhariwal, "Glow", NeurIPS 2018 (data-dependent initialisation of
the element-wise affine layer). Grathwohl et al., "FFJORD", ICLR 2019 (the 2-D toy data sets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from stabfw.core.capabilities import MetricInfo
from stabfw.core.loop import SelfConsumingLoop
from stabfw.errors import ConfigError

__all__ = ["DATASETS", "FlowState", "Toy2DFlowLoop", "flow_forward", "flow_log_prob",
           "flow_sample", "sample_dataset"]

DATASETS = ("two_moons", "eight_gaussians", "checkerboard", "rings")
_LOG2PI = math.log(2 * math.pi)


# --- data sets ------------------------------------------------------------------------
def sample_dataset(name: str, n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """``n`` points of a 2-D toy density, shape ``(n, 2)``, roughly standardised.

    Parameters
    ----------
    name : {"two_moons", "eight_gaussians", "checkerboard", "rings"}
    n : int
    rng : numpy.random.Generator
    noise : float
        Standard deviation of the Gaussian noise added to the moons/rings (and of each
        of the eight Gaussians).
    """
    if name == "two_moons":
        k = rng.integers(0, 2, n)
        a = rng.uniform(0.0, math.pi, n)
        x = np.where(k == 0, np.cos(a), 1.0 - np.cos(a))
        y = np.where(k == 0, np.sin(a), 0.5 - np.sin(a))
        pts = np.stack([x - 0.5, y - 0.25], axis=1) * 1.6
    elif name == "eight_gaussians":
        k = rng.integers(0, 8, n)
        ang = 2 * math.pi * k / 8
        pts = 2.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1) / math.sqrt(2)
        pts = pts + rng.standard_normal((n, 2)) * max(noise, 1e-3) * 4
        return pts
    elif name == "checkerboard":
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2
        x2 = x2 + (np.floor(x1) % 2)
        return np.stack([x1, x2], axis=1)
    elif name == "rings":
        k = rng.integers(0, 3, n)
        r = np.array([0.6, 1.2, 1.8])[k]
        a = rng.uniform(0, 2 * math.pi, n)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    else:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return pts + rng.standard_normal((n, 2)) * noise


# --- the flow as a pure function of θ ----------------------------------------------------
@dataclass(frozen=True)
class FlowState:
    """A fitted flow: its flat parameter vector θ (float64) and fit diagnostics."""

    theta: np.ndarray
    grad_norm: float = math.nan
    iterations: int = 0


class _Spec:
    """Slices of the flat θ: element-wise affine (4) then ``layers`` couplings."""

    def __init__(self, layers: int, hidden: int):
        self.layers, self.hidden = layers, hidden
        self.per_layer = 4 * hidden + 2  # W1 (h), b1 (h), W2 (2h), b2 (2)
        self.dim = 4 + layers * self.per_layer

    def affine(self, theta):
        return theta[0:2], theta[2:4]  # log-scale, shift

    def layer(self, theta, k: int):
        h = self.hidden
        o = 4 + k * self.per_layer
        w1 = theta[o:o + h]
        b1 = theta[o + h:o + 2 * h]
        w2 = theta[o + 2 * h:o + 4 * h].reshape(2, h)
        b2 = theta[o + 4 * h:o + 4 * h + 2]
        return w1, b1, w2, b2


_S_MAX = 4.0  # soft clamp of the log-scale; keeps L-BFGS line searches finite
_NEWTON_FROM = 1e-3  # L-BFGS hands over to Newton below this gradient (measured fastest)


def _conditioner(params, u):
    import torch

    w1, b1, w2, b2 = params
    # fixed offsets spread the units' pre-activations: θ = 0 is then no stationary point of
    # a unit (tanh(0) = 0 would make "dead" units whose parameters weight decay pins at 0,
    # leaving directions that move neither the density nor the samples)
    offset = torch.linspace(-2.0, 2.0, w1.shape[-1], dtype=w1.dtype)
    hid = torch.tanh(u[:, None] * w1 + b1 + offset)
    out = hid @ w2.T + b2
    s = _S_MAX * torch.tanh(out[:, 0] / _S_MAX)
    return s, out[:, 1]


def flow_forward(spec: _Spec, theta, x):
    """Data → base: ``(z, log|det ∂z/∂x|)`` per point (torch, differentiable)."""
    import torch

    a, c = spec.affine(theta)
    y = x * torch.exp(a) + c
    logdet = a.sum().expand(x.shape[0])
    for k in range(spec.layers):
        i = k % 2  # conditioning coordinate; the other one is transformed
        s, t = _conditioner(spec.layer(theta, k), y[:, i])
        yb = y[:, 1 - i] * torch.exp(s) + t
        y = torch.stack([y[:, 0], yb] if i == 0 else [yb, y[:, 1]], dim=1)
        logdet = logdet + s
    return y, logdet


def flow_log_prob(spec: _Spec, theta, x):
    """log p_θ(x) per point, shape ``(n,)`` (torch, differentiable in θ and x)."""
    z, logdet = flow_forward(spec, theta, x)
    return -0.5 * (z**2).sum(dim=1) - _LOG2PI + logdet


def flow_sample(spec: _Spec, theta, z):
    """The inverse flow applied to base noise ``z`` (n, 2): reparameterised samples."""
    import torch

    y = z
    for k in reversed(range(spec.layers)):
        i = k % 2
        s, t = _conditioner(spec.layer(theta, k), y[:, i])
        yb = (y[:, 1 - i] - t) * torch.exp(-s)
        y = torch.stack([y[:, 0], yb] if i == 0 else [yb, y[:, 1]], dim=1)
    a, c = spec.affine(theta)
    return (y - c) * torch.exp(-a)


# --- the domain ---------------------------------------------------------------------------
class Toy2DFlowLoop(SelfConsumingLoop):
    """A normalizing flow on a 2-D toy density, retrained on its own samples.

    Parameters
    ----------
    dataset : {"two_moons", "eight_gaussians", "checkerboard", "rings"}
    n : int
        Number of real points.
    layers : int
        Affine coupling layers (alternating the transformed coordinate).
    hidden : int
        Hidden units of each coupling's conditioner network. θ has
        ``4 + layers · (4·hidden + 2)`` entries (4 × 8: 140; 8 × 32: 1044).
    noise : float
        Noise level of the data set.
    max_iter : int
        L-BFGS iterations per fit (an upper bound).
    gtol : float
        Stop when the largest absolute gradient entry of the training loss is below this.
    init_scale : float
        Standard deviation of the random first-layer weights of a cold start.
    weight_decay : float
        L2 penalty ``weight_decay/2·‖θ‖²`` added to the mean negative log-likelihood. The
        unpenalised likelihood of a flow has no minimiser on finite data (it keeps
        sharpening), so the arg-min the analyzers differentiate needs it; the price is that
        θ* is no longer an exact fixed point of the infinite-sample map (the analyzers
        report ‖G(θ*) − θ*‖ and can analyse the fixed point itself).
    newton_max_dim : int
        Up to this many parameters the fit finishes with Newton's method (trust region,
        exact Hessian) down to ``gtol``; above it L-BFGS alone.
    newton_iter : int
        Newton iterations at most.
    n_eval : int
        Points used by the metrics (held-out real points and model samples).

    Notes
    -----
    Metrics: ``nll_test`` (mean negative log-likelihood of held-out real points),
    ``w1_sliced`` (sliced Wasserstein-1 distance between model samples and held-out real
    points), ``sample_var`` (total variance of model samples), ``fit_grad_norm``.
    Implements the differentiable protocol: ``loss(theta, data)`` is the mean negative
    log-likelihood plus the penalty, ``sample(theta, noise)`` the inverse flow of standard
    normal noise and ``draw_noise(n, rng)`` that noise; ``generate(state, n, rng)`` equals
    ``sample(θ, draw_noise(n, rng))``. ``score(batch, state)`` (the log-likelihood) lets
    the ``top_fraction`` curation hook keep the most likely samples.
    """

    test_params: ClassVar[dict[str, Any]] = {"n": 64, "layers": 2, "hidden": 4, "max_iter": 300,
                                             "weight_decay": 0.1, "n_eval": 128}

    def __init__(
        self,
        dataset: Literal["two_moons", "eight_gaussians", "checkerboard", "rings"] = "two_moons",
        n: int = 512,
        layers: int = 4,
        hidden: int = 8,
        noise: float = 0.1,
        max_iter: int = 2000,
        gtol: float = 1e-9,
        init_scale: float = 1.0,
        weight_decay: float = 0.03,
        newton_max_dim: int = 200,
        newton_iter: int = 100,
        n_eval: int = 2000,
    ):
        self.dataset = dataset
        self.n = n
        self.layers = layers
        self.hidden = hidden
        self.noise = noise
        self.max_iter = max_iter
        self.gtol = gtol
        self.init_scale = init_scale
        self.weight_decay = weight_decay
        self.newton_max_dim = newton_max_dim
        self.newton_iter = newton_iter
        self.n_eval = n_eval

    # --- set-up -----------------------------------------------------------------------
    def check_params(self) -> None:
        """Counts ≥ 1 (``n``, ``layers``, ``hidden``, ``max_iter``, ``n_eval``,
        ``newton_iter``), scales ≥ 0 and a known ``dataset``, before any work."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"domain.dataset: must be one of {', '.join(DATASETS)}; got "
                              f"{self.dataset!r}")
        for name in ("n", "layers", "hidden", "max_iter", "n_eval", "newton_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"domain.{name}: must be ≥ 1, got {getattr(self, name)}")
        for name in ("noise", "weight_decay", "newton_max_dim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"domain.{name}: must be ≥ 0, got {getattr(self, name)}")
        for name in ("gtol", "init_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"domain.{name}: must be > 0, got {getattr(self, name)}")

    def size_hint(self) -> dict[str, int]:
        """``n_real`` and ``dim_theta`` (the flow's parameter count)."""
        return {"n_real": int(self.n), "dim_theta": int(_Spec(self.layers, self.hidden).dim)}

    @property
    def spec(self) -> _Spec:
        """Layout of θ."""
        self.check_params()
        return _Spec(self.layers, self.hidden)

    @property
    def dim(self) -> int:
        """Length of θ."""
        return self.spec.dim

    # --- differentiable protocol ----------------------------------------------------------
    @staticmethod
    def _tensor(x):
        import torch

        if isinstance(x, torch.Tensor):
            return x if x.dtype == torch.float64 else x.to(torch.float64)
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    def loss(self, theta, data):
        """Mean negative log-likelihood of ``data`` plus the weight-decay penalty."""
        theta = self._tensor(theta)
        nll = -flow_log_prob(self.spec, theta, self._tensor(data)).mean()
        if self.weight_decay:
            nll = nll + 0.5 * self.weight_decay * (theta**2).sum()
        return nll

    def sample(self, theta, noise):
        """Reparameterised samples: the inverse flow of base noise (torch, differentiable)."""
        return flow_sample(self.spec, self._tensor(theta), self._tensor(noise))

    def draw_noise(self, n: int, rng: np.random.Generator):
        """Standard normal base noise, shape ``(n, 2)`` (torch float64)."""
        import torch

        return torch.as_tensor(rng.standard_normal((n, 2)))

    # --- the loop -----------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator) -> np.ndarray:
        _ = self.spec  # validates the parameters
        return sample_dataset(self.dataset, self.n, rng, self.noise)

    def _init_theta(self, data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        theta = np.zeros(spec.dim)
        std = np.asarray(data, float).std(axis=0) + 1e-6
        theta[0:2] = -np.log(std)  # data-dependent init (Glow's actnorm)
        theta[2:4] = -np.asarray(data, float).mean(axis=0) / std
        h = spec.hidden
        for k in range(spec.layers):
            o = 4 + k * spec.per_layer
            theta[o:o + h] = rng.standard_normal(h) * self.init_scale
            theta[o + h:o + 2 * h] = rng.standard_normal(h) * 0.5
            theta[o + 2 * h:o + 4 * h] = rng.standard_normal(2 * h) * 0.01
        return theta

    def fit(self, data: Any, init: FlowState | None, rng: np.random.Generator) -> FlowState:
        from threadpoolctl import threadpool_limits

        # One BLAS thread: between torch's evaluations L-BFGS-B's threaded OpenBLAS and
        # torch's OpenMP pool spin against each other (2 cores: a refit of two_moons_flow
        # took 5.5 s, ≈ 1 s with this), and the fit's path no longer depends on the core count
        with threadpool_limits(1, user_api="blas"):
            return self._fit(data, init, rng)

    def _fit(self, data: Any, init: FlowState | None, rng: np.random.Generator) -> FlowState:
        import torch
        from scipy.optimize import minimize

        f, points = self._objective(data)
        theta0 = self._init_theta(points, rng) if init is None else np.asarray(init.theta)
        grad = torch.func.grad(f)

        def fun(x):
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            v = f(t)
            (g,) = torch.autograd.grad(v, t)
            return float(v.detach()), g.numpy().copy()

        # L-BFGS for the bulk of the way, then Newton (trust region, exact Hessian) to gtol
        newton = self.dim <= self.newton_max_dim and self.newton_iter > 0
        res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "ftol": 1e-15, "maxcor": 30,
                                "gtol": max(self.gtol, _NEWTON_FROM) if newton else self.gtol})
        x, its = res.x, int(res.nit)
        gmax = float(np.abs(res.jac).max())
        if gmax > self.gtol and newton:
            def hess(v):
                t = torch.as_tensor(v, dtype=torch.float64)
                H = torch.func.jacrev(grad)(t).numpy()
                return 0.5 * (H + H.T)

            res = minimize(fun, x, jac=True, hess=hess, method="trust-exact",
                           options={"gtol": self.gtol, "maxiter": self.newton_iter})
            x, its = res.x, its + int(res.nit)
            g = res.jac
            gmax = float(np.abs(g).max())
            # the trust region stalls once loss differences are below rounding (~1e-16);
            # plain Newton steps, kept while the gradient shrinks, finish the job
            for _ in range(5):
                if gmax <= self.gtol:
                    break
                x_new = x - np.linalg.solve(hess(x), g)
                g_new = fun(x_new)[1]
                if not float(np.abs(g_new).max()) < gmax:
                    break
                x, g, gmax, its = x_new, g_new, float(np.abs(g_new).max()), its + 1
        if not np.all(np.isfinite(x)):
            raise FloatingPointError("toy2d: the flow's fit produced non-finite parameters")
        return FlowState(np.asarray(x, dtype=float), gmax, its)

    def _objective(self, data: Any):
        """The training loss of ``data`` as a function of θ, and points for a cold start."""
        X = self._tensor(data)
        return (lambda t: self.loss(t, X)), X.numpy()

    def generate(self, state: FlowState, n: int, rng: np.random.Generator) -> np.ndarray:
        import torch

        noise = self.draw_noise(n, rng)
        with torch.no_grad():
            return self.sample(state.theta, noise).numpy()

    def params(self, state: FlowState) -> np.ndarray:
        return np.asarray(state.theta, dtype=float).copy()

    def with_params(self, state: FlowState, theta: np.ndarray) -> FlowState:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.dim,):
            raise ValueError(f"toy2d: theta must have length {self.dim}, got shape {theta.shape}")
        return FlowState(theta.copy())

    def score(self, batch: Any, state: FlowState) -> np.ndarray:
        """Log-likelihood of each sample under ``state`` (for likelihood-based curation)."""
        import torch

        with torch.no_grad():
            return flow_log_prob(self.spec, self._tensor(state.theta), self._tensor(batch)).numpy()

    def log_prob(self, state: FlowState, x: Any) -> np.ndarray:
        """log p_θ(x) per point."""
        return self.score(x, state)

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        return {
            "nll_test": MetricInfo("error", "lower", "held-out negative log-likelihood (nats)"),
            "w1_sliced": MetricInfo("error", "lower", "sliced Wasserstein-1 to held-out data"),
            "sample_var": MetricInfo("diversity", None, "total variance of model samples"),
            "fit_grad_norm": MetricInfo("other", "lower", "gradient norm at the fit"),
        }

    def metrics(self, state: FlowState, rng: np.random.Generator) -> dict[str, float]:
        import torch

        from stabfw.core.streams import stream

        # held-out real points: one fixed stream, the same for every generation and seed
        test = sample_dataset(self.dataset, self.n_eval, stream(0, -1, "toy2d-test"), self.noise)
        syn = self.generate(state, self.n_eval, rng)
        with torch.no_grad():
            nll = float(self.loss(state.theta, test))
        return {
            "nll_test": nll,
            "w1_sliced": _sliced_w1(syn, test, rng),
            "sample_var": float(np.var(syn, axis=0).sum()) if np.all(np.isfinite(syn)) else math.nan,
            "fit_grad_norm": float(state.grad_norm),
        }


def _sliced_w1(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_proj: int = 64) -> float:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    ang = rng.uniform(0, math.pi, n_proj)
    dirs = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    pa, pb = np.sort(a @ dirs.T, axis=0), np.sort(b @ dirs.T, axis=0)
    return float(np.mean(np.abs(pa - pb)))
