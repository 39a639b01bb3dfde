"""JacobianAnalyzer on exponential families (C1): ρ(J) = λ/(1+λ) for every applicable method.

With common random numbers the finite-sample map is a deterministic function of θ, and its
Jacobian is random around the infinite-sample value λ/(1+λ)·I. Each tolerance below is
derived from the sample size of the synthetic batch (m = λn).
"""

import math

import numpy as np
import pytest

import stabfw
from stabfw.core.streams import stream
from stabfw.domains.gaussian import GaussianLoop

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


class ExponentialLoop(stabfw.SelfConsumingLoop):
    """Exponential distribution in its mean parameter μ, with the differentiable protocol.

    MLE μ̂ = mean(x); sampling μ·e with e ~ Exp(1) (reparameterised). With common random
    numbers G(μ) = (n x̄ + m μ ē)/(n + m), so J = m ē/(n + m) exactly, ē the mean of the
    batch's noise, E ē = 1 and sd(ē) = 1/√m.
    """

    def __init__(self, n=200, mu=2.0):
        self.n, self.mu = n, mu

    def real_data(self, rng):
        return self.mu * rng.standard_exponential(self.n)

    def fit(self, data, init, rng):
        return np.array([float(np.mean(np.asarray(data, float)))])

    def generate(self, state, n, rng):
        return (state[0] * self.draw_noise(n, rng)).numpy()

    def params(self, state):
        return np.asarray(state, float).copy()

    def with_params(self, state, theta):
        return np.asarray(theta, float).copy()

    def loss(self, theta, data):
        x = torch.as_tensor(np.asarray(data, float)) if not isinstance(data, torch.Tensor) else data
        return (torch.log(theta[0]) + x / theta[0]).mean()

    def sample(self, theta, noise):
        return theta[0] * noise

    def draw_noise(self, n, rng):
        return torch.as_tensor(rng.standard_exponential(n))


class Gauss1D(stabfw.SelfConsumingLoop):
    """1-D Gaussian in (mean, variance), ML fit, reparameterised sampling μ + √v·z."""

    def __init__(self, n=300):
        self.n = n

    def real_data(self, rng):
        return 1.0 + 2.0 * rng.standard_normal(self.n)

    def fit(self, data, init, rng):
        x = np.asarray(data, float)
        return np.array([x.mean(), x.var()])

    def generate(self, state, n, rng):
        return self.sample(torch.as_tensor(state), self.draw_noise(n, rng)).numpy()

    def params(self, state):
        return np.asarray(state, float).copy()

    def with_params(self, state, theta):
        return np.asarray(theta, float).copy()

    def loss(self, theta, data):
        x = torch.as_tensor(np.asarray(data, float)) if not isinstance(data, torch.Tensor) else data
        return (0.5 * torch.log(theta[1]) + (x - theta[0]) ** 2 / (2 * theta[1])).mean()

    def sample(self, theta, noise):
        return theta[0] + torch.sqrt(theta[1]) * noise

    def draw_noise(self, n, rng):
        return torch.as_tensor(rng.standard_normal(n))


METHODS_BLACK_BOX = ("finite_difference", "empirical")
METHODS_ALL = ("dense", "implicit", "finite_difference", "empirical")


@pytest.mark.parametrize("lam", [0.5, 1.0, 3.0])
def test_gaussian_mean_is_exactly_lambda_over_one_plus_lambda(lam):
    """Known covariance: G(μ) = (n x̄ + m(μ + L z̄))/(n + m), J = m/(n+m)·I exactly."""
    loop = GaussianLoop(dim=3, n=40, covariance="known")
    cfg = stabfw.RetrainConfig(lam=lam, seeds=1)
    m = cfg.n_synthetic(40)
    for method in METHODS_BLACK_BOX:
        res = stabfw.JacobianAnalyzer(method=method).analyze(loop, cfg)
        assert res.spectral_radius == pytest.approx(m / (40 + m), abs=1e-7), method
        np.testing.assert_allclose(res.eigenvalues, m / (40 + m), atol=1e-7)
        assert res.spectral_norm == pytest.approx(m / (40 + m), abs=1e-7)
        assert res.residual > 0 and res.at == "theta_star"


@pytest.mark.parametrize("n,lam", [(200, 1.0), (1000, 3.0)])
def test_gaussian_full_covariance_within_the_sample_size_tolerance(n, lam):
    """Full covariance, d = 2: J = c·I + E with c = λ/(1+λ), so |ρ(J) − c| ≤ ‖E‖.

    E comes from the synthetic batch (m = λn points): the Wishart scatter deviates from
    (m−1)·I by at most 2√(md) + d (Marchenko–Pastur edges, with high probability), entering
    the covariance block twice through the Cholesky factor (≤ 4√(d/m) + 2d/m relative);
    the mean–covariance coupling is O(√(d/m)) through L z̄ and O(√(d/n)) through the
    between-group scatter. Hence ‖E‖ ≤ c·(5√(d/m) + 2√(d/n) + 2d/m). The mean block is
    exactly c.
    """
    d = 2
    loop = GaussianLoop(dim=d, n=n, covariance="full")
    cfg = stabfw.RetrainConfig(lam=lam, seeds=[7])
    m = cfg.n_synthetic(n)
    c = m / (n + m)
    tol = c * (5 * math.sqrt(d / m) + 2 * math.sqrt(d / n) + 2 * d / m)
    results = {}
    for method in METHODS_BLACK_BOX:
        res = stabfw.JacobianAnalyzer(method=method).analyze(loop, cfg, at="fixed_point")
        results[method] = res
        assert abs(res.spectral_radius - c) <= tol, (method, res.spectral_radius, c, tol)
        np.testing.assert_allclose(res.matrix[:d, :d], c * np.eye(d), atol=1e-4)
        assert res.residual < 1e-6  # the point is the fixed point of the CRN map
    # two independent routes to the same matrix: forward differences along trajectories
    # (ε = 1e-3·‖θ‖) vs central differences (h = 1e-4·‖θ‖): agree to O(ε)
    np.testing.assert_allclose(results["empirical"].matrix, results["finite_difference"].matrix,
                               atol=5e-3)


def test_exponential_family_every_method_gives_m_ebar_over_n_plus_m():
    n, lam = 200, 1.5
    loop = ExponentialLoop(n=n)
    cfg = stabfw.RetrainConfig(lam=lam, seeds=[2])
    m = cfg.n_synthetic(n)
    ebar = float(np.mean(stream(2, 1, "generate").standard_exponential(m)))
    exact = m * ebar / (n + m)
    c = lam / (1 + lam)
    # sd(ē) = 1/√m: the finite-sample value lies within 4 SD of λ/(1+λ)
    assert abs(exact - c) <= 4 * c / math.sqrt(m)
    for method in METHODS_ALL:
        res = stabfw.JacobianAnalyzer(method=method, bounds=False).analyze(loop, cfg)
        assert res.spectral_radius == pytest.approx(exact, rel=1e-6), method
        assert res.method == method


def test_differentiable_gaussian_all_methods_agree_and_match_c1():
    n, lam = 300, 1.0
    loop = Gauss1D(n=n)
    cfg = stabfw.RetrainConfig(lam=lam, seeds=[5])
    res = {m: stabfw.JacobianAnalyzer(method=m, bounds=False).analyze(loop, cfg)
           for m in METHODS_ALL}
    dense = res["dense"].matrix
    for m in ("implicit", "finite_difference"):
        J = stabfw.JacobianAnalyzer(method=m).operator(loop, cfg).to_dense()
        np.testing.assert_allclose(J, dense, atol=1e-6, rtol=1e-6)
    for m in ("implicit", "finite_difference"):
        assert res[m].spectral_radius == pytest.approx(res["dense"].spectral_radius, rel=1e-6), m
    # empirical: 2-step trajectories from θ* also see J at G(θ*), ‖G(θ*) − θ*‖ away (the map
    # is nonlinear in v), so it estimates an average of J along that drift
    drift = res["empirical"].info["reference_drift"] / np.linalg.norm(res["empirical"].point)
    assert res["empirical"].spectral_radius == pytest.approx(res["dense"].spectral_radius,
                                                             rel=max(drift, 1e-4))
    m_syn = cfg.n_synthetic(n)
    c = lam / (1 + lam)
    # J = c·I + E with E driven by z̄ and s_z² − 1 of the batch (each O(1/√m))
    assert abs(res["dense"].spectral_radius - c) <= c * 5 / math.sqrt(m_syn)


def test_implicit_transpose_matches_the_dense_transpose():
    loop = Gauss1D(n=100)
    cfg = stabfw.RetrainConfig(lam=2.0, seeds=[1])
    J = stabfw.JacobianAnalyzer(method="dense", bounds=False).analyze(loop, cfg).matrix
    op = stabfw.JacobianAnalyzer(method="implicit").operator(loop, cfg)
    for u in np.eye(2):
        np.testing.assert_allclose(op.rmatvec(u), J.T @ u, atol=1e-8)


def test_spectrum_methods_on_the_finite_difference_operator():
    loop = GaussianLoop(dim=3, n=100, covariance="full")
    cfg = stabfw.RetrainConfig(lam=1.0, seeds=1)
    dense = stabfw.JacobianAnalyzer(method="finite_difference", spectrum="dense").analyze(loop, cfg)
    assert dense.n_matvecs == 9  # d columns
    # clustered spectrum (all eigenvalues near 1/2): power iteration needs many steps,
    # Arnoldi spans the whole 9-dimensional Krylov space
    r = stabfw.JacobianAnalyzer(method="finite_difference", spectrum="power", tol=1e-6).analyze(loop, cfg)
    assert r.spectral_radius == pytest.approx(dense.spectral_radius, rel=1e-3)
    assert r.info["spectrum_converged"]
    r = stabfw.JacobianAnalyzer(method="finite_difference", spectrum="arnoldi", tol=1e-6).analyze(loop, cfg)
    assert r.spectral_radius == pytest.approx(dense.spectral_radius, rel=1e-6)
    assert r.n_matvecs <= 30


def test_fully_synthetic_and_hooks_and_bad_arguments():
    loop = GaussianLoop(dim=1, n=50, covariance="known")
    fs = stabfw.RetrainConfig(policy="fully_synthetic", seeds=1)
    res = stabfw.JacobianAnalyzer(method="finite_difference").analyze(loop, fs)
    assert res.spectral_radius == pytest.approx(1.0, abs=1e-9)  # a random walk: J = 1
    with pytest.raises(ValueError, match="pool of past synthetic"):
        stabfw.JacobianAnalyzer().analyze(loop, stabfw.RetrainConfig(policy="accumulate"))
    with pytest.raises(TypeError, match="differentiable domain"):
        stabfw.JacobianAnalyzer(method="implicit").analyze(loop, stabfw.RetrainConfig())
    with pytest.raises(ValueError, match="method must be one of"):
        stabfw.JacobianAnalyzer(method="adjoint").analyze(loop, stabfw.RetrainConfig())
    with pytest.raises(ValueError, match="at must be"):
        stabfw.JacobianAnalyzer().analyze(loop, stabfw.RetrainConfig(), at="elsewhere")


def test_result_dict_is_json_ready():
    import json

    loop = ExponentialLoop(n=50)
    res = stabfw.JacobianAnalyzer(method="implicit").analyze(loop, stabfw.RetrainConfig(lam=0.2))
    d = json.loads(json.dumps(res.to_dict()))
    assert d["method"] == "implicit" and d["stable"] is True
    assert d["bounds"]["alpha"] > 0  # Theorem 1 reported beside ρ for a differentiable loop
    assert d["bounds"]["condition"] in (True, False)


class AttentionMean(stabfw.SelfConsumingLoop):
    """A 1-D mean θ[0] plus three parameters tied to it through a self-attention penalty.

    ``loss = mean ½(x − θ₀)² + ‖SDPA(Q(θ), K(θ), V(θ))‖²/20 + ‖θ‖²/20``. CPU's default
    (flash) attention kernel has neither a double backward nor forward-mode AD, so the
    implicit and dense Jacobians work only under the math kernel the operator selects.
    """

    def __init__(self, n=80):
        self.n = n

    def _pen(self, t):
        import torch.nn.functional as F

        q = torch.stack([t, t.roll(1), t.roll(2)]).reshape(1, 1, 3, 4)
        return (F.scaled_dot_product_attention(q, 0.5 * q, torch.tanh(q)) ** 2).sum() / 20

    def real_data(self, rng):
        return 0.3 + rng.standard_normal(self.n)

    def loss(self, theta, data):
        x = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data, float))
        return (0.5 * (x - theta[0]) ** 2).mean() + self._pen(theta) + (theta**2).sum() / 20

    def fit(self, data, init, rng):
        from scipy.optimize import minimize

        from stabfw.core.differentiable import math_attention

        def fun(v):
            t = torch.tensor(v, requires_grad=True)
            with math_attention():
                val = self.loss(t, data)
                (g,) = torch.autograd.grad(val, t)
            return float(val.detach()), g.numpy()

        x0 = np.zeros(4) if init is None else np.asarray(init, float)
        return minimize(fun, x0, jac=True, method="BFGS", options={"gtol": 1e-12}).x

    def generate(self, state, n, rng):
        return self.sample(torch.as_tensor(state), self.draw_noise(n, rng)).detach().numpy()

    def params(self, state):
        return np.asarray(state, float).copy()

    def with_params(self, state, theta):
        return np.asarray(theta, float).copy()

    def sample(self, theta, noise):
        return theta[0] + noise

    def draw_noise(self, n, rng):
        return torch.as_tensor(rng.standard_normal(n))


def test_attention_needs_and_gets_the_math_kernel():
    import torch.nn.functional as F

    q = torch.randn(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((F.scaled_dot_product_attention(q, q, q) ** 2).sum(), q,
                               create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):  # CPU flash kernel
        torch.autograd.grad(g.sum(), q)
    loop = AttentionMean()
    cfg = stabfw.RetrainConfig(lam=1.0, seeds=[0])
    dense = stabfw.JacobianAnalyzer(method="dense", bounds=False).analyze(loop, cfg)
    imp = stabfw.JacobianAnalyzer(method="implicit").operator(loop, cfg).to_dense()
    # the BFGS fit converges to ~1e-9: at the default step that error over h is ~1e-5, at
    # h = 1e-3 it is below the truncation error (5e-7 measured)
    fd = stabfw.JacobianAnalyzer(method="finite_difference", fd_step=1e-3).operator(
        loop, cfg).to_dense()
    np.testing.assert_allclose(imp, dense.matrix, atol=1e-8)
    np.testing.assert_allclose(fd, dense.matrix, atol=1e-5)
    assert np.abs(dense.matrix[1:, 0]).max() > 1e-3  # the penalty couples θ₀ to the rest


def test_spectra_on_known_matrices():
    from stabfw.analysis.spectra import arnoldi, dense_spectrum, power_iteration, spectral_norm

    rng = np.random.default_rng(0)
    d = 60
    S = np.eye(d) + 0.2 * rng.standard_normal((d, d)) / np.sqrt(d)
    # dominant complex pair 0.9·e^{±0.5i}, the rest within 0.5
    D = np.zeros((d, d))
    D[:2, :2] = 0.9 * np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    D[2:, 2:] = np.diag(rng.uniform(-0.5, 0.5, d - 2))
    J = S @ D @ np.linalg.inv(S)
    ref = dense_spectrum(J)
    assert ref.spectral_radius == pytest.approx(0.9, rel=1e-10)
    assert ref.spectral_norm == pytest.approx(np.linalg.svd(J, compute_uv=False)[0])
    p = power_iteration(J, tol=1e-8)
    assert p.converged and p.spectral_radius == pytest.approx(0.9, rel=1e-6)
    assert abs(p.eigenvalues[0].imag) == pytest.approx(0.9 * np.sin(0.5), rel=1e-5)
    a = arnoldi(J, k=2, tol=1e-10, norm=False)
    np.testing.assert_allclose(np.abs(a.eigenvalues[:2]), 0.9, rtol=1e-8)
    assert a.n_matvecs <= 60
    assert spectral_norm(J, tol=1e-8) == pytest.approx(ref.spectral_norm, rel=1e-6)
