"""The public API: names users and docs rely on, capabilities, aliases, the JSON codec and
typed analyzer options."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import stabfw
from stabfw._util.jsonio import dumps, loads
from stabfw.cli import main
from stabfw.core.loop import SelfConsumingLoop
from stabfw.domains.gaussian import GaussianLoop

ROOT = Path(__file__).resolve().parents[2]

# the names of the README and the API sketch, and every result type
PUBLIC = ["SelfConsumingLoop", "VectorizedLoop", "check_loop", "LoopCheckError", "RetrainConfig",
          "RunConfig", "load_config", "ConfigError", "run_loop", "Trajectory",
          "FixedPointAnalyzer", "RetrainingMap", "JacobianAnalyzer", "critical_lambda",
          "estimate_alpha", "estimate_L", "estimate_epsilon", "theorem1_condition",
          "theorem1_rate", "theorem2_bound", "gaussian_mean_theorem2_constants", "make",
          "register", "register_hook", "FixedPointResult", "FixedPointSolution",
          "JacobianResult", "CriticalLambda", "CriticalValue", "Spectrum", "Capabilities",
          "GenerationStep", "replay", "__version__"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names(name):
    assert name in stabfw.__all__
    assert getattr(stabfw, name) is not None


class ThetaOnly(SelfConsumingLoop):
    """A loop written with the new names (theta / with_theta)."""

    def __init__(self, n=10):
        self.n = n

    def real_data(self, rng):
        return rng.normal(size=self.n)

    def fit(self, data, init, rng):
        return float(np.mean(data))

    def generate(self, state, n, rng):
        return rng.normal(state, 1.0, n)

    def theta(self, state):
        return np.array([state])

    def with_theta(self, state, theta):
        return float(theta[0])


def test_theta_and_params_are_aliases_both_ways():
    loop = ThetaOnly()
    assert loop.params(2.0)[0] == 2.0 and loop.with_params(1.0, np.array([3.0])) == 3.0
    assert loop.capabilities().with_theta and loop.supports_with_params
    stabfw.check_loop(loop)
    g = GaussianLoop(dim=1)  # the API sketch's names
    state = g.fit(np.zeros((4, 1)) + 1.0, None, np.random.default_rng(0))
    np.testing.assert_array_equal(g.theta(state), g.params(state))

    class Neither(SelfConsumingLoop):
        real_data = fit = generate = ThetaOnly.fit

    with pytest.raises(TypeError, match=r"implement theta\(state\)"):
        Neither()


def test_capabilities_are_one_record():
    caps = GaussianLoop().capabilities()
    assert (caps.with_theta, caps.vectorized, caps.differentiable, caps.custom_mix) == \
        (True, True, False, False)
    assert caps.to_dict()["score"] is True  # its log-density (sampling_bias, top_fraction)
    assert ThetaOnly().capabilities().to_dict()["score"] is False
    assert not ThetaOnly().capabilities().vectorized


def test_constructor_parameters_follow_scikit_learn():
    loop = GaussianLoop(dim=2, n=30)
    assert loop.get_params(deep=False)["dim"] == 2
    loop.real_data(stabfw.core.streams.stream(0, -1, "real"))  # builds lazy state
    assert loop.set_params(dim=3) is loop and loop.dim == 3
    state = loop.fit(np.ones((5, 3)), None, np.random.default_rng(0))
    assert state.mean.shape == (3,)  # the lazy set-up was rebuilt for dim 3
    with pytest.raises(ValueError, match=r"no parameter 'dims'.*accepted: .*dim"):
        loop.set_params(dims=1)
    sklearn = pytest.importorskip("sklearn.base")
    copy = sklearn.clone(loop)
    assert copy is not loop and copy.get_params() == loop.get_params()


def test_check_loop_runs_named_checks_alone():
    class BadGenerate(ThetaOnly):
        def generate(self, state, n, rng):
            return rng.normal(state, 1.0, n // 2)

    with pytest.raises(stabfw.LoopCheckError, match="returned 4 samples") as err:
        stabfw.check_loop(BadGenerate(), checks=["generate"])
    assert len(err.value.problems) == 1
    stabfw.check_loop(BadGenerate(), checks=["real_data", "fit"])  # the others pass
    with pytest.raises(ValueError, match=r"unknown check.*available: interface"):
        stabfw.check_loop(ThetaOnly(), checks=["nope"])


def test_json_codec_writes_valid_json_and_round_trips_infinity():
    data = {"lam": math.inf, "neg": -math.inf, "nan": math.nan, "arr": np.array([1.5, np.inf]),
            "z": 1 + 2j, "i": np.int64(3), "t": (1, 2)}
    text = dumps(data)
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    back = loads(text)
    assert back["lam"] == math.inf and back["neg"] == -math.inf and back["nan"] is None
    assert back["arr"] == [1.5, math.inf] and back["z"] == [1.0, 2.0] and back["t"] == [1, 2]


def test_result_types_share_one_json_form():
    loop = GaussianLoop(dim=1, n=40, covariance="known")
    cfg = stabfw.RetrainConfig(lam=1.0, generations=12, seeds=6)
    fp = stabfw.FixedPointAnalyzer(n_bootstrap=20).analyze(stabfw.run_loop(loop, cfg))
    sol = stabfw.FixedPointAnalyzer().solve(loop, cfg)
    jac = stabfw.JacobianAnalyzer(method="finite_difference").analyze(loop, cfg)
    for res in (fp, sol, jac):
        assert isinstance(res, stabfw.analysis.results.AnalysisResult)
        parsed = json.loads(res.to_json(), parse_constant=lambda c: pytest.fail(c))
        assert isinstance(parsed, dict) and loads(res.to_json()).keys() == parsed.keys()
    assert jac.status == "ok" and jac.n_evaluations == jac.n_map_evaluations > 0
    # every evaluation counted: the iterations and the local-rate check at the point
    assert sol.n_evaluations == sol.residuals.size + sol.info["local_rate_evaluations"]


def test_jacobian_options_are_typed_in_the_analyzer_and_in_configs(tmp_path, capsys):
    with pytest.raises(stabfw.ConfigError, match=r"unknown option.*cg_tol.*accepted: fd_init"):
        stabfw.JacobianAnalyzer(method="finite_difference", cg_tol=1e-3)
    with pytest.raises(stabfw.ConfigError, match="fd_step"):
        stabfw.JacobianAnalyzer(method="finite_difference", fd_step="not-a-number")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("domain: {name: gaussian}\nanalysis:\n  jacobian:\n"
                   "    methods: [finite_difference]\n    options: {fd_step: not-a-number}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "analysis.jacobian.options" in err and "fd_step" in err
    assert "Traceback" not in err


def _python_blocks(path):
    text = (ROOT / path).read_text()
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


def test_the_readme_example_runs_as_written():
    """The README's first Python block, as a user would paste it (the map invariant too)."""
    code = _python_blocks("README.md")[0]
    assert "RetrainingMap" in code
    ns: dict = {}
    exec(compile(code + "\nassert np.allclose(G(traj.params[0, 0]), traj.params[0, 1])\n",
                 "README.md", "exec"), ns)
    assert ns["traj"].params.shape == (200, 51, 1)
