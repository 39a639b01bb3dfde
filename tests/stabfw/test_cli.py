"""`stabfw run | validate | list` as a user types them."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stabfw.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "loop.generations=4", "--set", "loop.seeds=20", "--set", "output.progress=false"]


def test_run_default_config_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["run", str(ROOT / "configs/gaussian.yaml"), "--out", str(out), *TINY]) == 0
    assert "report" in capsys.readouterr().out
    assert (out / "report.png").stat().st_size > 10_000
    index = json.loads((out / "index.json").read_text())
    cells = [c["cell"] for c in index["cells"]]
    assert cells == ["lam=0", "lam=0.5", "lam=1", "lam=inf"]
    for cell in cells:
        d = out / "cells" / cell
        metrics = pd.read_csv(d / "metrics.csv")
        assert list(metrics.columns[:2]) == ["seed", "generation"]
        assert len(metrics) == 20 * 5
        rec = yaml.safe_load((d / "config.yaml").read_text())
        assert rec["seeds"] == list(range(20))
        assert rec["config"]["domain"] == {"name": "gaussian", "dim": 2, "n": 20,
                                           "covariance": "full", "ddof": 0, "true_mean": None,
                                           "true_cov": None, "data": None}
        assert "numpy" in rec["environment"]["packages"]
        summary = json.loads((d / "summary.json").read_text())
        assert summary["n_seeds"] == 20 and summary["generations"] == 4
        assert (d / "params.npz").is_file()
    # the collapse is in the numbers too: fully synthetic log-det falls, λ = 0 stays put
    inf = json.loads((out / "cells/lam=inf/summary.json").read_text())["metrics"]["cov_logdet"]
    zero = json.loads((out / "cells/lam=0/summary.json").read_text())["metrics"]["cov_logdet"]
    assert inf["final_mean"] < inf["generation_0_mean"] - 0.5
    assert zero["final_mean"] == pytest.approx(zero["generation_0_mean"])


def test_same_config_twice_gives_identical_metrics(tmp_path):
    cfg = str(ROOT / "configs/gaussian_fixed_real.yaml")
    for name in ("a", "b"):
        assert main(["run", cfg, "--out", str(tmp_path / name), *TINY]) == 0
    assert (tmp_path / "a/metrics.csv").read_bytes() == (tmp_path / "b/metrics.csv").read_bytes()


def test_validate_and_list(capsys):
    assert main(["validate", str(ROOT / "configs/gaussian.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in ("gaussian", "toy2d", "rl", "forecasting", "anomaly", "diffusion"):
        assert name in listing


def test_bad_config_exits_2_naming_the_field(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("domain: {name: gaussian}\nloop: {policy: replace}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "loop.policy" in err and "fixed_real" in err
    assert main(["run", str(ROOT / "configs/gaussian.yaml"), "--set", "domain.n=-3",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "domain.n" in err and "greater than or equal to 2" in err
    assert not (tmp_path / "x" / "metrics.csv").exists()
