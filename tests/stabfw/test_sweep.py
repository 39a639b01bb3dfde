"""Sweeps: grid expansion and its errors, skipping finished cells, index and aggregates."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import stabfw
from stabfw import cli
from stabfw.errors import ConfigError, RunDirError, SweepFailed
from stabfw.experiments.grid import expand_grid, is_finished, short_keys
from stabfw.experiments.runfile import run_config
from stabfw.experiments.sweep import run_sweep
from stabfw.run import registry
from stabfw.run.config import parse_config
from stabfw.run.runner import run_loop


def _cfg(grid, **loop):
    raw = {
        "domain": {"name": "gaussian", "dim": 1, "n": 8},
        "loop": {"policy": "fixed_real", "generations": 3, "seeds": 3, **loop},
        "output": {"report": False, "progress": False},
        "sweep": {"grid": grid, "backend": "serial"},
    }
    return parse_config(raw)


# --- grid ---------------------------------------------------------------------------
def test_expand_grid_is_the_cartesian_product_with_values_applied():
    cells = expand_grid(_cfg({"loop.lam": [0, 0.5, ".inf"], "domain.n": [8, 16]}))
    assert len(cells) == 6
    names = [c.name for c in cells]
    assert names[:2] == ["lam=0,n=8", "lam=0,n=16"]
    assert "lam=inf,n=16" in names
    for c in cells:
        assert c.config.sweep is None
        assert c.config.domain.params["n"] == c.overrides["domain.n"]
        assert c.config.loop.lam == c.overrides["loop.lam"]
    assert cells[-1].overrides["loop.lam"] == math.inf


def test_expand_grid_sweeps_policies_and_seed_lists():
    cells = expand_grid(_cfg({"loop.policy": ["fixed_real", "accumulate"],
                              "loop.seeds": [[0, 1], [5, 6, 7]]}))
    assert [c.name for c in cells] == [
        "policy=fixed_real,seeds=0-1", "policy=fixed_real,seeds=5-6-7",
        "policy=accumulate,seeds=0-1", "policy=accumulate,seeds=5-6-7"]
    assert cells[1].config.loop.seed_list == [5, 6, 7]


def test_grid_errors_name_the_cell_and_the_field():
    with pytest.raises(ConfigError, match=r"lam=-1.*loop\.lam"):
        expand_grid(_cfg({"loop.lam": [0.5, -1]}))
    with pytest.raises(ConfigError, match=r"domain\.colour"):
        expand_grid(_cfg({"domain.colour": ["red"]}))
    with pytest.raises(ConfigError, match=r"loop\.lamda"):
        expand_grid(_cfg({"loop.lamda": [1]}))
    with pytest.raises(ConfigError, match="share the directory name"):
        expand_grid(_cfg({"loop.lam": [1, 1]}))
    with pytest.raises(ConfigError, match=r"lam=1 and lam=1\.0 are the same configuration"):
        expand_grid(_cfg({"loop.lam": [1, 1.0]}))
    with pytest.raises(ConfigError, match=r"sweep\.grid.*domain\. or loop\."):
        _cfg({"output.dir": ["a"]})
    with pytest.raises(ConfigError, match="must not be empty"):
        _cfg({"loop.lam": []})
    with pytest.raises(ConfigError, match=r"sweep\.backend"):
        parse_config({"domain": {"name": "gaussian"},
                      "sweep": {"grid": {"loop.lam": [1]}, "backend": "spark"}})


def test_short_names_fall_back_to_the_full_key_when_they_clash():
    assert short_keys(["domain.n", "loop.n", "loop.lam"]) == {
        "domain.n": "domain.n", "loop.n": "loop.n", "loop.lam": "lam"}


# --- running ------------------------------------------------------------------------
def test_cells_equal_independent_runs_and_index_and_aggregates(tmp_path):
    cfg = _cfg({"loop.lam": [0.5, 2.0]})
    runs = run_config(cfg, tmp_path)  # the old entry point delegates to the sweep
    assert sorted(runs) == ["lam=0.5", "lam=2.0"]
    for cell in expand_grid(cfg):
        alone = run_loop(registry.make("gaussian", dim=1, n=8), cell.config.loop)
        np.testing.assert_array_equal(runs[cell.name].params, alone.params)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [c["cell"] for c in index["cells"]] == ["lam=0.5", "lam=2.0"]
    assert {c["status"] for c in index["cells"]} == {"done"}
    assert index["grid"] == {"loop.lam": [0.5, 2.0]}
    agg = pd.read_csv(tmp_path / "aggregates.csv")
    for _, row in agg.iterrows():
        m = pd.read_csv(tmp_path / "cells" / row["cell"] / "metrics.csv")
        last = m[m["generation"] == 3]["mean_sq_err_true"]
        assert row["mean_sq_err_true.final_mean"] == pytest.approx(last.mean(), rel=1e-9)
        assert row["loop.lam"] in (0.5, 2.0)


def test_rerun_skips_finished_cells_and_reruns_changed_or_missing_ones(tmp_path):
    cfg = _cfg({"loop.lam": [0.5, 1.0]})
    first = run_sweep(cfg, tmp_path, progress=False)
    assert {r.status for r in first.results.values()} == {"done"}
    stamp = {c: (tmp_path / "cells" / c / "params.npz").stat().st_mtime_ns for c in first.results}

    again = run_sweep(cfg, tmp_path, progress=False)
    assert {r.status for r in again.results.values()} == {"skipped"}
    assert stamp == {c: (tmp_path / "cells" / c / "params.npz").stat().st_mtime_ns
                     for c in first.results}

    # a grown grid runs only its new cell; a cell whose files went missing runs again
    (tmp_path / "cells" / "lam=1.0" / "summary.json").unlink()
    grown = run_sweep(_cfg({"loop.lam": [0.5, 1.0, 4.0]}), tmp_path, progress=False)
    assert {n: r.status for n, r in grown.results.items()} == {
        "lam=0.5": "skipped", "lam=1.0": "done", "lam=4.0": "done"}

    # another configuration (more generations) is not "finished", and its finished cell is
    # never overwritten without force
    longer = _cfg({"loop.lam": [0.5]}, generations=4)
    assert not is_finished(tmp_path / "cells" / "lam=0.5", expand_grid(longer)[0].config)
    before = (tmp_path / "cells" / "lam=0.5" / "params.npz").read_bytes()
    with pytest.raises(RunDirError, match=r"lam=0\.5.*--force"):
        run_sweep(longer, tmp_path, progress=False)
    assert (tmp_path / "cells" / "lam=0.5" / "params.npz").read_bytes() == before
    forced = run_sweep(longer, tmp_path, progress=False, force=True)
    assert forced.results["lam=0.5"].status == "done"


class _FailingCoin(stabfw.SelfConsumingLoop):
    """A coin whose fit raises from generation ``fail_at`` on (never when it is None)."""

    def __init__(self, n: int = 20, fail_at: int | None = None):
        self.n, self.fail_at = n, fail_at

    def real_data(self, rng):
        return (rng.random(self.n) < 0.3).astype(float)

    def fit(self, data, init, rng):
        depth = 0 if init is None else init[1] + 1
        if self.fail_at is not None and depth >= self.fail_at:
            raise ArithmeticError("the fit failed on purpose")
        return (float(np.mean(data)), depth)

    def generate(self, state, n, rng):
        return (rng.random(n) < state[0]).astype(float)

    def params(self, state):
        return np.array([state[0]])


def test_a_failing_cell_does_not_stop_the_others(tmp_path):
    registry.register("failing_coin_sweep", _FailingCoin, overwrite=True)
    cfg = parse_config({"domain": {"name": "failing_coin_sweep"},
                        "loop": {"lam": 1, "generations": 3, "seeds": 2},
                        "output": {"report": False, "progress": False},
                        "sweep": {"grid": {"domain.fail_at": [None, 2]},
                                  "backend": "serial"}})
    res = run_sweep(cfg, tmp_path)
    assert res.failed == ["fail_at=2"]
    assert res.results["fail_at=None"].status == "done"
    index = json.loads((tmp_path / "index.json").read_text())
    failed = [c for c in index["cells"] if c["status"] == "failed"]
    assert failed[0]["cell"] == "fail_at=2"
    assert "_FailingCoin.fit at seed 0, generation 2 raised ArithmeticError" in failed[0]["error"]
    assert "Traceback" not in failed[0]["error"]
    # the failing cell kept generations 0-1 in its checkpoint
    assert (tmp_path / "cells" / "fail_at=2" / "checkpoint" / "gen_000001.npz").is_file()
    with pytest.raises(SweepFailed, match=r"(?s)1 sweep cell\(s\) failed.*fail_at=2"):
        run_config(cfg, tmp_path)


def test_cli_sweep_and_its_errors(tmp_path, capsys):
    config = tmp_path / "s.yaml"
    config.write_text(
        "domain: {name: gaussian, dim: 1, n: 8}\n"
        "loop: {generations: 2, seeds: 2}\n"
        "output: {report: false, progress: false}\n"
        "sweep: {grid: {loop.lam: [0, 1]}}\n")
    out = tmp_path / "out"
    assert cli.main(["sweep", str(config), "--out", str(out), "--backend", "serial",
                     "--set", "loop.generations=3"]) == 0
    assert "2 cells, 0 already finished" in capsys.readouterr().out
    assert cli.main(["sweep", str(config), "--out", str(out), "--backend", "serial",
                     "--set", "loop.generations=3"]) == 0
    assert "2 already finished" in capsys.readouterr().out
    assert json.loads((out / "index.json").read_text())["config"]["loop"]["generations"] == 3

    plain = tmp_path / "plain.yaml"
    plain.write_text("domain: {name: gaussian}\n")
    assert cli.main(["sweep", str(plain), "--out", str(out)]) == 2
    assert "no 'sweep:' section" in capsys.readouterr().err
    assert cli.main(["sweep", str(config), "--out", str(out), "--workers", "0"]) == 2
    assert "sweep.workers" in capsys.readouterr().err
