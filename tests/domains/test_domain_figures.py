"""Domain figures through ``report_figures``: a forecasting fan chart and RL return curves,
checked on the Figure objects and on the run's page."""

from __future__ import annotations

import pytest

from stabfw.experiments.single import run_single
from stabfw.run.config import parse_config
from stabfw.run.registry import make


def _run(tmp_path, domain, lam=0.5, generations=2, seeds=1):
    cfg = parse_config({"domain": domain, "output": {"progress": False},
                        "loop": {"lam": lam, "generations": generations, "seeds": seeds}})
    out = tmp_path / f"lam={lam}"
    run_single(cfg, out)
    return out


def _check_axes(fig):
    for ax in (a for a in fig.axes if a.get_visible()):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def test_forecasting_fan_chart_per_lambda(tmp_path):
    pytest.importorskip("sktime")
    domain = {"name": "forecasting", "dataset": "shampoo_sales", "forecaster": "theta",
              "holdout": 6, "pi_paths": 50}
    runs = {"λ = 0.5": _run(tmp_path, domain, 0.5, generations=4),
            "λ = 2": _run(tmp_path, domain, 2.0, generations=4)}
    # the forecasts of generation 0 … 4 of the first seed were recorded during the run
    assert sorted(p.name for p in (runs["λ = 0.5"] / "forecasts" / "seed0").iterdir()) == [
        f"gen{g:03d}.npz" for g in range(5)]
    loop = make(**domain)
    ((title, fig),) = loop.report_figures(runs)
    assert "Fan chart" in title
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["λ = 0.5", "λ = 2"]
    for ax in axes:  # history, real future, generations 0, middle (2), last (4)
        labels = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert labels == ["generation 0", "generation 2", "generation 4"]
        assert len(ax.get_lines()) == 5 and len(ax.collections) == 3  # + 3 interval bands
    _check_axes(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["real history", "real future (held out)"]
    html = (runs["λ = 0.5"] / "report.html").read_text()
    assert "Fan chart: forecasts per generation and λ" in html


def test_rl_return_curves_per_lambda(tmp_path):
    pytest.importorskip("gymnasium")
    from stabfw.domains.rl import BehaviorCloningLoop

    domain = {"name": "rl", **BehaviorCloningLoop.test_params}
    runs = {"λ = 0.5": _run(tmp_path, domain, 0.5), "λ = 1": _run(tmp_path, domain, 1.0)}
    loop = make(**domain)
    ((title, fig),) = loop.report_figures(runs)
    assert title.startswith("Return per generation")
    assert [a.get_title() for a in fig.axes] == ["return_mean", "kl_expert_policy"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["λ = 0.5", "λ = 1"]
    _check_axes(fig)
    html = (runs["λ = 1"] / "report.html").read_text()
    assert "Return per generation and λ" in html and 'id="domain-figures"' in html


def test_anomaly_score_histograms_admitted_vs_rejected(tmp_path):
    pytest.importorskip("sklearn")
    import numpy as np

    from stabfw.domains.anomaly.loop import AnomalyLoop

    domain = {"name": "anomaly", **AnomalyLoop.test_params}
    runs = {"λ = 1": _run(tmp_path, domain, 1.0, generations=2)}
    rec = np.load(runs["λ = 1"] / "scores" / "seed0" / "gen002.npz")
    assert rec["normal"].size > 0 and np.isfinite(float(rec["threshold"]))
    ((title, fig),) = make(**domain).report_figures(runs)
    assert "admitted vs rejected" in title
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title().split(":")[0] for a in axes] == [
        "λ = 1, generation 0", "λ = 1, generation 1", "λ = 1, generation 2"]
    _check_axes(fig)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == [
        "admitted (score ≤ threshold)", "rejected"]
    html = (runs["λ = 1"] / "report.html").read_text()
    assert "Stream scores: admitted vs rejected" in html
