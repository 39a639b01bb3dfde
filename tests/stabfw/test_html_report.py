"""The HTML report: well-formed, self-contained, and holding what it claims (checked with
an HTML parser, and in headless Chromium when it is installed)."""

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from stabfw import cli
from stabfw.experiments.single import run_single
from stabfw.experiments.sweep import run_sweep
from stabfw.reporting.html import write_report
from stabfw.run.config import parse_config

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source"}


class Page(HTMLParser):
    """Checks that tags nest, and collects images, links, sections' text and tables."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.imgs, self.links, self.sources = [], [], [], [], []
        self.section, self.text, self.cells = None, {}, []
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append(attrs[key])
        if tag == "section":
            self.section = attrs.get("id")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self.section:
            self.text[self.section] = self.text.get(self.section, "") + data
        if self.stack and self.stack[-1] == "td":
            self.cells.append(data)


def _check_self_contained(page, root):
    assert page.errors == []
    assert all(not s.startswith(("http:", "https:", "//", "file:")) for s in page.sources)
    pngs = {p.name: p.read_bytes() for p in root.glob("*.png")}
    assert sorted(i["alt"] for i in page.imgs) == sorted(pngs)
    for img in page.imgs:
        head, _, data = img["src"].partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data) == pngs[img["alt"]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = parse_config({"domain": {"name": "gaussian", "dim": 1, "n": 10},
                        "loop": {"lam": 0.5, "generations": 4, "seeds": [3, 5, 8]},
                        "output": {"progress": False}})
    run_single(cfg, out)
    return out


def test_run_page_is_self_contained_and_holds_what_it_claims(run_dir):
    html = (run_dir / "report.html").read_text()
    page = Page(html)
    _check_self_contained(page, run_dir)
    assert [i["alt"] for i in page.imgs] == ["report.png"]
    config = page.text["configuration"]
    assert "policy: fixed_real" in config and "lam: 0.5" in config and "name: gaussian" in config
    assert "3, 5, 8 (3 seeds)" in page.text["seeds"]
    versions = page.text["versions"]
    assert np.__version__ in versions and "numpy" in versions and "python" in versions
    summary = json.loads((run_dir / "summary.json").read_text())
    for name, stats in summary["metrics"].items():
        assert name in page.text["metrics"]
        assert f"{stats['final_mean']:.5g}" in page.cells
    assert "No analyzer results" in page.text["analyzer-results"]
    # the page opens with the summary card; without an analysis it says what is missing
    assert html.index('id="summary"') < html.index('id="overview"') < html.index('id="figures"')
    card = page.text["summary"]
    # the opening line, the four entries of the one row and λ*
    assert "λ = 0.5" in card and card.count("not measured") == 6
    assert "analysis.jacobian" in card and "analysis.fixed_point" in card
    assert "values]" not in html  # no "[61 values]" placeholders


def test_analyzer_results_appear_in_a_table(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["analysis"] = {"jacobian": {"spectral_radius": 0.3333333, "method": "dense",
                                        "eigenvalues": [0.3333333, 0.25]},
                           "fixed_point": {"verdict": "stationary_noise", "rate": 0.31}}
    (run / "summary.json").write_text(json.dumps(summary))
    assert cli.main(["report", str(run)]) == 0
    page = Page((run / "report.html").read_text())
    assert page.errors == []
    text = page.text["analyzer-results"]
    for expect in ("jacobian", "spectral_radius", "0.33333", "dense", "fixed_point", "verdict",
                   "stationary_noise", "0.31"):
        assert expect in text, expect
    assert "values]" not in text
    assert cli.main(["report", str(tmp_path / "nothing")]) == 1
    assert "neither a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = parse_config({"domain": {"name": "gaussian", "dim": 1, "n": 10},
                        "loop": {"generations": 3, "seeds": 4},
                        "output": {"progress": False},
                        "sweep": {"grid": {"loop.lam": [0.5, ".inf"]}, "backend": "serial",
                                  "stability": {"quantity": "final:cov_trace",
                                                "threshold": 0.9}},
                        "analysis": {"fixed_point": {"metrics": ["cov_trace"]},
                                     "jacobian": {"methods": ["finite_difference"], "seeds": 2,
                                                  "bounds": False},
                                     "headline": {"theory": "auto"}}})
    run_sweep(cfg, out)
    return out


def test_sweep_page_links_cells_and_shows_the_critical_value(sweep_dir):
    page = Page((sweep_dir / "report.html").read_text())
    _check_self_contained(page, sweep_dir)
    assert {"report.png", "stability.png"} <= {i["alt"] for i in page.imgs}
    cells = [p for p in page.links if p and p.startswith("cells/")]
    assert sorted(cells) == ["cells/lam=0.5/report.html", "cells/lam=inf/report.html"]
    assert all((sweep_dir / c).is_file() for c in cells)
    found = json.loads((sweep_dir / "stability.json").read_text())
    assert found["critical"] and found["critical"][0]["text"] in page.text["critical-values"]
    assert "0–3 (4 seeds) in every cell" in page.text["seeds"]
    assert "lam=inf" in page.text["cells"] and "loop.lam" in page.text["overview"]
    assert ".inf" in page.text["configuration"]  # ∞ kept, not written as null


def test_sweep_page_opens_with_the_summary_card(sweep_dir):
    html = (sweep_dir / "report.html").read_text()
    page = Page(html)
    assert html.index('id="summary"') < html.index('id="figures"')
    headline = json.loads((sweep_dir / "summary.json").read_text())["headline"]
    card = page.text["summary"]
    # one row per λ, the verdict in words and colour, ρ(J) against theory, the limit
    assert card.index("λ = 0.5") < card.index("λ = ∞")
    for row in headline["rows"]:
        rho = f"ρ(J) = {row['rho']:.3g}"
        assert rho in card, rho
    assert f"λ/(1+λ) = {1 / 3:.3g}" in card
    assert "‖θ̂_∞ − θ*‖ =" in card
    verdicts = {r["verdict"] for r in headline["rows"]}
    badge = {"stationary_noise": 'badge good">stable (noisy)', "converged": 'badge good">converges',
             "collapsing": 'badge bad">collapsing', "inconclusive": 'badge muted">inconclusive'}
    for v in verdicts:
        assert badge[v] in html, v
    assert headline["critical"]["text"] in card
    assert "Theorem 1" in card and "not measured" in card  # bounds: false
    # compact tables: the cell page shows long series as sparklines, not "[N values]"
    cell = (sweep_dir / "cells" / "lam=0.5" / "report.html").read_text()
    assert "values]" not in cell and '<svg class="spark"' in cell
    cell_page = Page(cell)
    assert "distance_mean" in cell_page.text["analyzer-results"]
    assert "evidence." not in cell_page.text["analyzer-results"]  # folded into one row
    assert "generations × seeds" in cell_page.text["run-time"]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium (apt-get install chromium)")
def test_pages_render_in_headless_chromium(run_dir, sweep_dir, tmp_path):
    """Every embedded image decodes in a real browser (naturalWidth > 0)."""
    probe = ("<script>window.onload=function(){var n=0,im=document.images;"
             "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
             "var c=document.getElementById('summary-card'),r=c.getBoundingClientRect();"
             "var rows=c.querySelectorAll('tr.cell').length;"
             "var top=document.querySelector('section').id;"
             "document.title='loaded '+n+' of '+im.length+'; card '+top+' '+rows+' rows '"
             "+(r.height>50&&r.width>300?'visible':'hidden');};</script></body>")
    for root in (run_dir, sweep_dir):
        page = tmp_path / f"{root.name}.html"
        page.write_text((root / "report.html").read_text().replace("</body>", probe))
        n_img = len(Page((root / "report.html").read_text()).imgs)
        dom = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
        n_rows = 2 if root == sweep_dir else 1
        assert (f"<title>loaded {n_img} of {n_img}; card summary {n_rows} rows visible</title>"
                in dom), dom[:300]
        assert "stabfw" in dom


def test_write_report_to_another_path(run_dir, tmp_path):
    target = write_report(run_dir, tmp_path / "elsewhere.html")
    assert target == tmp_path / "elsewhere.html"
    assert target.read_text() == (run_dir / "report.html").read_text()


def test_templates_ship_as_package_data():
    """Every template file is matched by pyproject's package-data globs."""
    import fnmatch
    from pathlib import Path

    import tomllib

    import stabfw.reporting.html as page

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["stabfw.reporting"]
    files = [p.relative_to(page.TEMPLATES.parent).as_posix() for p in page.TEMPLATES.iterdir()]
    assert {"templates/page.html.j2", "templates/macros.html.j2", "templates/style.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)
    assert any(d.startswith("jinja2") for d in data["project"]["dependencies"])
