"""The figures, checked on the matplotlib Figure objects: every legend names every cell,
every panel has labelled axes, generation ticks are whole numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stabfw.reporting.figures import analysis_figure, headline_figure, runs_figure
from stabfw.run.config import RetrainConfig
from stabfw.run.registry import make
from stabfw.run.runner import run_loop


@pytest.fixture(scope="module")
def runs():
    loop = make("gaussian", dim=1, n=10)
    out = {}
    for lam in (0.0, 0.5, math.inf):
        cfg = RetrainConfig(lam=lam, generations=3, seeds=4)
        out[f"λ = {lam:g}"] = run_loop(loop, cfg, progress=False)
    return out


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_runs_figure_legend_names_every_cell_even_lam_zero(runs):
    fig = runs_figure(runs, title="t")
    assert len(fig.legends) == 1  # one figure-level legend, not one from the first panel
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["λ = 0", "λ = 0.5", "λ = inf"]
    dist = next(ax for ax in fig.axes if ax.get_title() == "dist_to_theta_star")
    # λ = 0 never leaves θ* and is not on the log-scale panel: the panel says so
    assert "λ = 0" not in [ln.get_label() for ln in dist.get_lines()]
    assert any("λ = 0: θ_t = θ* throughout" in t.get_text() for t in dist.texts)
    assert dist.get_yscale() == "log"


def test_runs_figure_panels_are_labelled_with_units_and_integer_ticks(runs):
    fig = runs_figure(runs)
    axes = _visible_axes(fig)
    assert len(axes) >= 4
    for ax in axes:
        assert ax.get_xlabel() == "generation", ax.get_title()
        assert ax.get_ylabel().strip(), ax.get_title()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and np.allclose(ticks, np.round(ticks)), (ax.get_title(), ticks)
    labels = {ax.get_title(): ax.get_ylabel().replace("\n", " ") for ax in axes}
    # the unit comes from the domain's metric_info(), recorded by the runner
    assert "data units²" in labels["cov_trace"]
    assert "units of θ" in labels["dist_to_theta_star"]


def test_analysis_and_headline_figures_have_labelled_axes():
    fp = {"verdict": "stationary_noise", "rate": 0.3, "distance_mean": [0, 0.2, 0.25, 0.24],
          "distance_q10": [0, 0.1, 0.1, 0.1], "distance_q90": [0, 0.3, 0.4, 0.35]}
    fig = analysis_figure({"fixed_point": fp})
    (ax,) = fig.axes
    assert ax.get_xlabel() == "generation" and "θ*" in ax.get_ylabel()
    assert np.allclose(ax.get_xticks(), np.round(ax.get_xticks()))
    rows = [{"lam": 0.5, "verdict": "stationary_noise", "rho": 0.34, "rho_ci": [0.3, 0.38],
             "theory_rho": 1 / 3, "theorem1": None}]
    fig = headline_figure({"rows": rows, "critical": {"text": "λ*: no crossing"}})
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("λ") and ax.get_ylabel().startswith("ρ(J)")


def test_a_headline_without_evidence_draws_without_a_legend_warning(recwarn):
    # every ρ not differentiable and no Theorem 1 bound: nothing to label (two_moons_flow)
    rows = [{"lam": lam, "verdict": "diverging", "rho": 1.2, "rho_status": "not_differentiable",
             "theorem1": None} for lam in (0.25, 1.0, 4.0)]
    fig = headline_figure({"rows": rows, "critical": {"text": "λ*: no ρ(J) to locate it"}})
    (ax,) = fig.axes
    assert ax.get_legend() is None
    assert not [w for w in recwarn if "legend" in str(w.message)]
    rows[0]["rho_status"] = "ok"  # one point that is evidence: labelled, with its legend
    (ax,) = headline_figure({"rows": rows, "critical": {}}).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["verdict: diverging"]
