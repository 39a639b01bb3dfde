import math

import pytest
import yaml

from stabfw import ConfigError, RetrainConfig, load_config
from stabfw.run.config import apply_overrides, parse_config

GOOD = {"domain": {"name": "gaussian", "dim": 2, "n": 20},
        "loop": {"lam": 1.0, "policy": "fixed_real", "generations": 5, "seeds": 3}}


def _with(path: str, value):
    return apply_overrides(GOOD, [f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}"])


@pytest.mark.parametrize(
    ("raw", "field", "hint"),
    [
        (_with("loop.policy", "replace"), "loop.policy", "fixed_real"),
        (_with("loop.lam", -0.5), "loop.lam", "greater than or equal to 0"),
        (_with("loop.lam", "lots"), "loop.lam", "valid number"),
        (_with("loop.generations", 0), "loop.generations", "greater than or equal to 1"),
        (_with("loop.generations", "ten"), "loop.generations", "valid integer"),
        (_with("loop.seeds", 0), "loop.seeds", "≥ 1"),
        (_with("loop.seeds", [1, 1]), "loop.seeds", "distinct"),
        (_with("loop.seeds", [-3]), "loop.seeds", "non-negative"),
        (_with("loop.lamda", 1.0), "loop.lamda", "Extra inputs are not permitted"),
        (_with("loop.warm_start", "perhaps"), "loop.warm_start", "valid boolean"),
        (_with("loop.curate", {"q": 0.5}), "loop.curate", "'name' key"),
        (_with("loop.vectorize", "sometimes"), "loop.vectorize", "'auto', 'never' or 'always'"),
        (_with("output.colour", "red"), "output.colour", "Extra inputs"),
        (_with("sweep.grid", {"lam": [1, 2]}), "sweep.grid", "dotted path"),
        (_with("domain.covariance", "spherical"), "domain.covariance", "'full', 'diag' or 'known'"),
        (_with("domain.dim", "two"), "domain.dim", "valid integer"),
        (_with("domain.bogus", 1), "domain.bogus", "Extra inputs"),
        (_with("domain.name", "nope"), "domain.name", "registered: "),
        ({"loop": GOOD["loop"]}, "domain", "Field required"),
        (apply_overrides(GOOD, ["loop.policy=fully_synthetic", "loop.lam=0.5"]), "loop",
         "contradicts policy 'fully_synthetic'"),
        (apply_overrides(GOOD, ["loop.subsample_size=10"]), "loop", "accumulate_subsample"),
    ],
)
def test_malformed_configs_name_the_field(raw, field, hint):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    msg = str(info.value)
    assert field in msg, msg
    assert hint in msg, msg


def test_good_config_and_inf_spellings():
    cfg = parse_config(GOOD)
    assert cfg.loop.real_fraction == pytest.approx(0.5)
    for spelling in (".inf", "inf", float("inf")):
        c = RetrainConfig(lam=spelling)
        assert math.isinf(c.lam) and c.real_fraction == 0.0 and c.fully_synthetic
    assert math.isinf(RetrainConfig(policy="fully_synthetic").lam)
    assert RetrainConfig().lam == 1.0
    assert RetrainConfig(seeds=3).seed_list == [0, 1, 2]
    assert RetrainConfig(seeds=[5, 9]).seed_list == [5, 9]


def test_n_synthetic_counts():
    assert RetrainConfig(lam=0.5).n_synthetic(10) == 5
    assert RetrainConfig(lam=0.33).n_synthetic(10) == 3  # floor(λ n)
    assert RetrainConfig(lam=0.3).n_synthetic(10) == 3  # no floating-point 2.9999
    assert RetrainConfig(lam=float("inf")).n_synthetic(10) == 10
    assert RetrainConfig(lam=float("inf"), synthetic_size=4).n_synthetic(10) == 4


def test_load_config_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    cfg = load_config(path, ["loop.lam=.inf", "domain.n=7"])
    assert math.isinf(cfg.loop.lam) and cfg.domain.params["n"] == 7
    with pytest.raises(ConfigError, match=r"expects key\.path=value"):
        load_config(path, ["loop.lam"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    for path in sorted(root.glob("gaussian*.yaml")):
        load_config(path)
