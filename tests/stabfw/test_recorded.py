"""`stabfw analyze FILE.csv|FILE.npz` on trajectories simulated outside stabfw."""

import json

import numpy as np
import pandas as pd
import pytest

from stabfw.analysis.recorded import analyze_recorded, load_recorded
from stabfw.cli import main
from stabfw.errors import ConfigError


def _ar_csv(path, rho=0.6, seeds=40, T=60, seed=0):
    """An AR(1) panel around per-seed fixed points, simulated here with plain numpy, with a
    'spread' metric that is constant (not collapsing)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(seeds)
    x = np.empty((seeds, T + 1))
    x[:, 0] = c / (1 - rho) + 3.0
    for t in range(T):
        x[:, t + 1] = c + rho * x[:, t] + 0.5 * rng.standard_normal(seeds)
    rows = [{"seed": s, "generation": g, "theta0": x[s, g], "theta1": 2 * x[s, g],
             "spread": 1.0 + 0.01 * rng.standard_normal()} for s in range(seeds)
            for g in range(T + 1)]
    pd.DataFrame(rows).sample(frac=1.0, random_state=1).to_csv(path, index=False)
    return x


def test_csv_report_matches_the_simulated_rate(tmp_path, capsys):
    f = tmp_path / "loop.csv"
    _ar_csv(f)
    rc = main(["analyze", str(f), "--theta", "theta0,theta1", "--metrics", "spread",
               "--diversity", "spread", "--out", str(tmp_path / "out")])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "analysis.json").read_text())
    fp = res["fixed_point"]
    assert fp["verdict"] == "stationary_noise"
    assert fp["rate_ci"][0] < 0.6 < fp["rate_ci"][1]
    # stationary sd around each seed's own limit is 0.5/√(1 − 0.36) = 0.625 per θ0 and twice
    # that for θ1 (√5 · 0.625 = 1.40 in norm); the common limit adds the seeds' spread of
    # c/(1−ρ) (sd 2.5, ×√5 = 5.6): level ≈ √(1.40² + 5.6²) ≈ 5.8, drawn from 40 seeds
    assert 4.0 < fp["level"] < 8.0
    assert not fp["collapsing_metrics"]["spread"]["collapsing"]
    assert res["headline"]["rows"][0]["verdict"] == "stationary_noise"
    out = capsys.readouterr().out
    assert "fixed point: stationary_noise" in out and "the loop: stationary_noise" in out
    assert (tmp_path / "out" / "analysis.png").stat().st_size > 5_000


def test_npz_and_python_api(tmp_path):
    rng = np.random.default_rng(2)
    theta = np.cumsum(rng.standard_normal((30, 41, 1)), axis=1)  # a random walk: diverges
    np.savez(tmp_path / "walk.npz", theta=theta, width=np.ones((30, 41)))
    panel = load_recorded(tmp_path / "walk.npz")
    assert panel.theta.shape == (30, 41, 1) and set(panel.metrics) == {"width"}
    res = analyze_recorded(panel)
    assert res["fixed_point"]["verdict"] == "diverging"


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.drop(columns="generation"), "no column 'generation'"),
    (lambda t: t.assign(theta0="x"), "column 'theta0' is not numeric"),
    (lambda t: t[~((t.seed == 3) & (t.generation == 5))], "seed 3 has 60 rows"),
])
def test_malformed_files_name_the_column(tmp_path, capsys, edit, match):
    f = tmp_path / "loop.csv"
    _ar_csv(f, seeds=5, T=60)
    edit(pd.read_csv(f)).to_csv(f, index=False)
    with pytest.raises(ConfigError, match=match):
        load_recorded(f, metrics="spread")
    assert main(["analyze", str(f), "--metrics", "spread"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_unknown_columns_and_options(tmp_path):
    f = tmp_path / "loop.csv"
    _ar_csv(f, seeds=5, T=10)
    with pytest.raises(ConfigError, match="no column 'nope'"):
        load_recorded(f, theta="nope")
    with pytest.raises(ConfigError, match="--diversity: no metric 'spread'"):
        analyze_recorded(load_recorded(f, theta="theta0"), diversity="spread")
