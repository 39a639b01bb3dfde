"""A sweep logged to a local MLflow store (no server) and its long results.csv."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from stabfw.cli import main

mlflow = pytest.importorskip("mlflow")

CFG = {"domain": {"name": "gaussian", "dim": 1, "n": 20},
       "loop": {"policy": "fixed_real", "generations": 3, "seeds": 4},
       "sweep": {"grid": {"loop.lam": [0.5, 2.0]}},
       "output": {"progress": False, "report": False}}


def test_a_sweep_logs_every_cell_to_a_local_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the tracker allows it
    store = tmp_path / "mlruns"
    cfg = {**CFG, "output": {**CFG["output"], "mlflow": {"tracking_uri": str(store),
                                                         "experiment": "sweep-test"}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this reader (cells ran elsewhere)
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.data.params["loop.lam"] for r in runs} == {"0.5", "2.0"}
    long = pd.read_csv(tmp_path / "out" / "results.csv")
    for r in runs:
        lam = float(r.data.params["loop.lam"])
        hist = client.get_metric_history(r.info.run_id, "cov_trace")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 1, 2, 3]
        # what was logged is the seeds' mean of the cell's own metrics table
        cell = long[long["loop.lam"] == lam]
        want = cell.groupby("generation")["cov_trace"].mean()
        got = {m.step: m.value for m in hist}
        assert [got[g] for g in want.index] == pytest.approx(want.to_numpy(), rel=1e-9)
        assert r.info.status == "FINISHED" and "final.cov_trace.sd" in r.data.metrics


def test_results_csv_is_one_row_per_cell_seed_and_generation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    long = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(long) == 2 * 4 * 4  # cells × seeds × (generations + 1)
    assert list(long.columns[:2]) == ["cell", "loop.lam"]
    assert set(long["loop.lam"]) == {0.5, 2.0} and {"seed", "generation", "cov_trace"} <= set(long)
    agg = pd.read_csv(tmp_path / "out" / "aggregates.csv")
    assert set(agg["cell"]) == set(long["cell"])


def test_mlflow_section_is_checked_by_validate(tmp_path, capsys):
    cfg = {**CFG, "output": {"mlflow": {"tracking_uri": ""}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 2
    assert "output.mlflow.tracking_uri" in capsys.readouterr().err
