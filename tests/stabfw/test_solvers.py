"""Fixed-point solvers: Picard, Anderson and Newton on maps with known fixed points."""

import numpy as np
import pytest

import stabfw
from stabfw.analysis.solvers import anderson, newton, picard, solve_fixed_point


def _linear_map(rho: float, d: int = 20, seed: int = 0):
    """G(x) = A x + b with a non-normal A of spectral radius ``rho``; fixed point known."""
    rng = np.random.default_rng(seed)
    S = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    eig = rho * np.linspace(1.0, 0.2, d)
    A = S @ np.diag(eig) @ np.linalg.inv(S)
    b = rng.standard_normal(d)
    x_star = np.linalg.solve(np.eye(d) - A, b)
    return (lambda x: A @ x + b), x_star


@pytest.mark.parametrize("solver", [picard, anderson])
def test_linear_contraction_reaches_the_known_fixed_point(solver):
    G, x_star = _linear_map(0.9)
    sol = solver(G, np.zeros_like(x_star), tol=1e-10, max_iter=2000)
    assert sol.status == "converged"
    np.testing.assert_allclose(sol.fixed_point, x_star, atol=1e-8)
    assert sol.residuals.size == sol.n_evaluations
    assert sol.residual == sol.residuals.min() <= 1e-10


def test_anderson_needs_fewer_evaluations_than_picard_at_rate_095():
    G, x_star = _linear_map(0.95)
    p = picard(G, np.zeros_like(x_star), tol=1e-8, max_iter=5000)
    a = anderson(G, np.zeros_like(x_star), tol=1e-8, max_iter=5000)
    assert p.converged and a.converged
    # Picard needs ~log(1e-8)/log(0.95) ≈ 360 steps; Anderson is Krylov-like (≲ 2d)
    assert a.n_evaluations < p.n_evaluations / 4


def test_anderson_falls_back_to_picard_on_a_map_linear_only_near_its_fixed_point():
    """G is the contraction x* + A(x − x*) plus jumps of size δ/K on a lattice of spacing 1/K
    around x* (as when a refit lands in another basin). Picard converges (79 steps); plain
    Anderson's extrapolations keep landing on jumps and it ran out of its 300 steps. With the
    stall restart (best iterate, halved memory) it converges (to a fixed point of G: the
    jumps make others beside x*)."""
    rng = np.random.default_rng(62)
    d, K, delta = int(rng.integers(2, 8)), rng.uniform(1, 30), rng.uniform(0.01, 0.5)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    A = Q @ np.diag(rng.uniform(0.3, 0.9, d)) @ Q.T
    x_star, P = rng.normal(size=d), rng.normal(size=(d, d))

    def G(x):
        return x_star + A @ (x - x_star) + delta * np.round(K * (P @ (x - x_star))) / K

    assert picard(G, np.zeros(d), tol=1e-10, max_iter=300).status == "converged"
    sol = anderson(G, np.zeros(d), tol=1e-10, max_iter=300)
    assert sol.status == "converged", sol.info
    assert sol.info["restarts"] >= 1 and sol.info["memory_at_end"] < 5
    assert np.linalg.norm(G(sol.fixed_point) - sol.fixed_point) <= 1e-10


def test_nonlinear_map_componentwise_cosine():
    # x = cos(x) has the Dottie number as its unique fixed point
    for method in ("picard", "anderson"):
        sol = solve_fixed_point(np.cos, np.zeros(3), method=method, tol=1e-12)
        np.testing.assert_allclose(sol.fixed_point, 0.7390851332151607, atol=1e-11)


def test_damped_picard_converges_where_plain_picard_oscillates():
    G = lambda x: -1.5 * x + 2.5  # noqa: E731  fixed point 1, slope −1.5
    assert picard(G, [0.0], tol=1e-10, max_iter=200).status == "diverged"
    sol = picard(G, [0.0], tol=1e-10, max_iter=500, damping=0.5)
    assert sol.converged and abs(sol.fixed_point[0] - 1.0) < 1e-9


def test_best_iterate_is_kept_when_the_iteration_diverges():
    G = lambda x: 2.0 * x + 1.0  # noqa: E731  repelling fixed point −1
    sol = picard(G, [0.0], tol=1e-12, max_iter=100)
    assert sol.status == "diverged"
    assert sol.fixed_point[0] == 0.0  # the start had the smallest residual


def _tanh_map(rho: float = 0.999, d: int = 12, seed: int = 1):
    """G(x) = A tanh(x) + b with a non-normal A of spectral radius ``rho``: slow and not
    uniform contraction (‖A‖ > 1), the analytic Jacobian A·diag(1 − tanh²x)."""
    rng = np.random.default_rng(seed)
    S = np.eye(d) + 0.8 * rng.standard_normal((d, d)) / np.sqrt(d)
    A = S @ np.diag(rho * np.linspace(1.0, 0.3, d)) @ np.linalg.inv(S)
    b = 0.05 * rng.standard_normal(d)
    return (lambda x: A @ np.tanh(x) + b), (lambda x, gx: A * (1 - np.tanh(x) ** 2)), A


def test_newton_converges_quadratically_where_picard_crawls():
    from scipy.optimize import fsolve

    G, jac, A = _tanh_map()
    assert np.linalg.norm(A, 2) > 1  # not a contraction in the 2-norm
    x0 = np.ones(12)
    sol = newton(G, x0, jacobian=jac, tol=1e-13)
    assert sol.status == "converged" and sol.info["jacobians"] <= 8
    # an independent root of G(x) − x (MINPACK's hybrid method, its own Jacobian)
    ref = fsolve(lambda x: G(x) - x, x0, xtol=1e-12)
    np.testing.assert_allclose(sol.fixed_point, ref, atol=1e-10)
    r = sol.residuals
    # the last steps square the residual (up to a constant)
    assert r[-1] <= 10 * r[-2] ** 2 + 1e-15
    assert picard(G, x0, tol=1e-13, max_iter=10 * sol.n_evaluations).status == "max_iter"
    # its stability from ρ of J at the point, one map evaluation more
    checked = solve_fixed_point(G, x0, method="newton", jacobian=jac, tol=1e-13)
    rho = np.abs(np.linalg.eigvals(jac(ref, G(ref)))).max()
    assert checked.local_rate == pytest.approx(rho, rel=1e-9) and checked.stability == "attracting"
    assert checked.n_evaluations == sol.n_evaluations + 1


def test_newton_backtracks_where_the_full_step_overshoots():
    """G(x) = x − arctan x: plain Newton on arctan diverges from |x| > 1.39."""
    G = lambda x: x - np.arctan(x)  # noqa: E731
    jac = lambda x, gx: np.diag(1 - 1 / (1 + x ** 2))  # noqa: E731
    sol = newton(G, np.array([3.0]), jacobian=jac, tol=1e-12)
    assert sol.status == "converged" and abs(sol.fixed_point[0]) < 1e-12
    assert min(sol.info["step_sizes"]) < 1 and sol.info["step_sizes"][-1] == 1
    # no decrease along a wrong direction: stopped, and said why
    bad = newton(G, np.array([3.0]), jacobian=lambda x, gx: np.diag(2 + 0 * x), tol=1e-12,
                 backtracks=3)
    assert bad.status == "max_iter" and "no step along the Newton direction" in bad.info["stopped"]
    assert bad.fixed_point[0] == 3.0  # the best iterate seen


def test_max_iter_status_and_bad_arguments():
    G, x_star = _linear_map(0.99)
    assert picard(G, np.zeros_like(x_star), max_iter=5).status == "max_iter"
    with pytest.raises(ValueError, match="damping"):
        picard(G, np.zeros_like(x_star), damping=0)
    with pytest.raises(ValueError, match="method must be one of"):
        solve_fixed_point(G, np.zeros_like(x_star), method="broyden")
    with pytest.raises(TypeError, match="jacobian"):
        solve_fixed_point(G, np.zeros_like(x_star), method="newton")


def test_solve_on_a_loop_finds_the_fixed_point_of_its_crn_map():
    """Gaussian mean, known σ: with common random numbers G(μ) = a + bμ, b = m/(n+m)."""
    from stabfw.domains.gaussian import GaussianLoop

    loop = GaussianLoop(dim=2, n=40, covariance="known")
    cfg = stabfw.RetrainConfig(lam=1.5, seeds=[3])
    G = stabfw.RetrainingMap(loop, cfg)
    a = G(np.zeros(2))
    b = 60 / 100
    expected = a / (1 - b)
    for method in ("picard", "anderson"):
        sol = stabfw.FixedPointAnalyzer().solve(loop, cfg, method=method, tol=1e-12, rtol=0)
        assert sol.status == "converged"
        np.testing.assert_allclose(sol.fixed_point, expected, atol=1e-10)
        assert sol.info["theta_star_residual"] > 0  # θ* is not a fixed point of a finite-sample map


def test_solvers_say_whether_the_fixed_point_attracts():
    """Performative prediction D(θ) = N(μ + εθ, σ²), the mean refitted on n draws with
    common random numbers: G(θ) = μ + εθ + σ·z̄, fixed point (μ + σz̄)/(1 − ε), local
    rate ε exactly. ε = 1.1 is repelling — Anderson still finds the point (G is affine)."""
    from stabfw.analysis.solvers import solve_fixed_point

    z = np.random.default_rng(0).standard_normal(100).mean()
    for eps, expect in ((0.9, "attracting"), (1.1, "repelling")):
        G = lambda th, e=eps: 10.0 + e * th + z  # noqa: E731
        sol = solve_fixed_point(G, np.array([10.0]), method="anderson", tol=1e-10)
        assert sol.status == "converged"
        assert sol.fixed_point[0] == pytest.approx((10.0 + z) / (1 - eps), rel=1e-8)
        assert sol.local_rate == pytest.approx(eps, rel=1e-5)
        assert sol.stability == expect
        assert sol.to_dict()["stability"] == expect
    # a 2-D map with a rotation: the power iteration need not settle, and then says so
    R = 0.5 * np.array([[0.0, -1.0], [1.0, 0.0]])
    sol = solve_fixed_point(lambda x: R @ x, np.array([1.0, 1.0]), method="picard", tol=1e-12)
    assert sol.local_rate == pytest.approx(0.5, rel=1e-4) and sol.stability == "attracting"


def test_a_map_is_solved_once_per_options_and_the_lambda_curve_at_its_lambda_reuses_it():
    from stabfw.analysis.critical import spectral_radius_scan
    from stabfw.analysis.jacobian.analyzer import solve_map
    from stabfw.domains.gaussian import GaussianLoop
    from stabfw.run.analysis_config import SolveOptions

    loop = GaussianLoop(dim=2, n=40, covariance="known")
    cfg = stabfw.RetrainConfig(lam=1.5, seeds=[3])
    G = stabfw.RetrainingMap(loop, cfg)
    assert G.with_lam(1.5) is G and G.with_lam(0.5) is not G
    sol = solve_map(G, None)
    used = G.n_evaluations
    assert solve_map(G, SolveOptions()) is sol and G.n_evaluations == used  # the same options
    other = solve_map(G, SolveOptions(method="picard"))
    assert other is not sol and G.n_evaluations > used
    # the λ curve at the run's own λ takes the point solved for the Jacobians
    used = G.n_evaluations
    an = stabfw.JacobianAnalyzer(method="finite_difference", k=2, bounds=False, norm=False)
    (point,) = spectral_radius_scan(loop, cfg, [1.5], [3], an, at="fixed_point", maps={3: G})
    fresh = stabfw.RetrainingMap(loop, cfg)
    (again,) = spectral_radius_scan(loop, cfg, [1.5], [3], an, at="fixed_point",
                                    maps={3: fresh})
    assert point["rho"] == again["rho"] and point["at"] == "fixed_point"
    assert G.n_evaluations - used < fresh.n_evaluations  # no second solve on G
