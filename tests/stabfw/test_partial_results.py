"""Each analyzer's result is written as soon as it finishes, with its seconds; progress
shows a line per analyzer."""

from __future__ import annotations

import json

import yaml

from stabfw.analysis.pipeline import analyze_run
from stabfw.cli import main
from stabfw.run.config import parse_config
from stabfw.run.trajectory import Trajectory

CFG = {"domain": {"name": "gaussian", "dim": 1, "n": 20},
       "loop": {"policy": "fixed_real", "lam": 1, "generations": 6, "seeds": 12},
       "analysis": {"fixed_point": {}, "jacobian": {"methods": ["finite_difference", "empirical"]}},
       "output": {"progress": False, "report": False}}


def test_each_analyzer_result_is_written_beside_the_summary(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("fixed_point", "jacobian"):
        part = json.loads((out / "analysis" / f"{name}.json").read_text())
        assert part == summary["analysis"][name]
    assert set(summary["analysis"]["jacobian"]) == {"finite_difference", "empirical"}
    phases = summary["meta"]["phase_seconds"]
    assert {"retraining", "analysis.fixed_point", "analysis.jacobian"} <= set(phases)
    assert all(v >= 0 for v in phases.values())


def test_on_result_sees_results_in_order_and_progress_names_each(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    seen = []
    got = analyze_run(Trajectory.load(out), parse_config(CFG), progress=True,
                      on_result=lambda k, v: seen.append((k, sorted(v) if k == "jacobian" else 0)))
    assert [k for k, _ in seen][:3] == ["fixed_point", "jacobian", "jacobian"]
    assert seen[1][1] == ["finite_difference"]  # the first method, before the second ran
    err = capsys.readouterr().err
    assert "Jacobian by finite_difference" in err and "Jacobian by empirical" in err
    assert type(got) is dict


def test_a_method_the_domain_cannot_do_is_refused_by_validate(tmp_path, capsys):
    cfg = {**CFG, "analysis": {"jacobian": {"methods": ["finite_difference", "dense"]}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 2
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("analysis.jacobian.methods: 'dense' needs a differentiable domain") == 2
    assert "Traceback" not in err and not (tmp_path / "r" / "summary.json").exists()


def test_a_newton_solve_on_a_domain_without_autodiff_is_refused_by_validate(tmp_path, capsys):
    cfg = {**CFG, "analysis": {"solve": {"method": "newton"}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 2
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("analysis.solve.method: 'newton' needs a differentiable domain") == 2
    assert err.count("use 'anderson' or 'picard'") == 2
    assert "Traceback" not in err and not (tmp_path / "r" / "summary.json").exists()
