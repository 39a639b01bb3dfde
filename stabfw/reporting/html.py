"""A self-contained HTML page for a run or sweep directory (``stabfw report DIR``).

The page opens with a summary card (the headline in words and colour: the verdict per λ,
ρ(J) against theory, where the loop converges, Theorem 1, λ*), then the figures (every PNG
of the directory and the domain's own, from :meth:`~stabfw.SelfConsumingLoop.report_figures`),
then compact tables (long series as inline sparklines, nested records folded), then the
provenance (run time per phase, seeds, versions, config). It is rendered from the Jinja2
templates in ``stabfw/reporting/templates`` and loads nothing from anywhere (images are
base64 ``data:`` URIs, no scripts, no external style sheets), so it can be mailed or archived
alone. A sweep's page links to its cells' pages by relative paths.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stabfw._util.atomic import atomic_write
from stabfw._util.jsonio import read_json
from stabfw._util.numbers import fmt
from stabfw.reporting.card import summary_card
from stabfw.reporting.compact import analysis_groups, sparkline_svg
from stabfw.run.provenance import VERSION

__all__ = ["TEMPLATES", "domain_figures", "render_page", "write_report"]

log = logging.getLogger(__name__)

#: Where the page templates live (shipped as package data).
TEMPLATES = Path(__file__).resolve().parent / "templates"

_FIGURE_ORDER = ("headline.png", "stability.png", "rho_vs_lambda.png", "heatmap.png",
                 "report.png", "analysis.png")
_CAPTIONS = {
    "headline.png": "The headline: ρ(J) per λ (± CI) coloured by the verdict, against the "
                    "closed form λ/(1+λ) and Theorem 1's bound.",
    "report.png": "Metrics across generations: median over seeds, band 10–90 %.",
    "analysis.png": "Analyzer results: distance to θ* per generation, the leading "
                    "eigenvalues of J, ρ(J) against λ.",
    "stability.png": "The stability diagram: the quantity along the critical axis, mean over "
                     "seeds ± standard error, with the threshold and the critical value.",
    "heatmap.png": "Heat map of a quantity over two swept axes (mean over seeds).",
    "rho_vs_lambda.png": "Measured spectral radius ρ(J) against λ, with Theorem 1's bound.",
}


# --- rendering ------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    """A table cell: pre-rendered markup as it is, numbers formatted, the rest as text."""
    from markupsafe import Markup

    if isinstance(value, tuple) and len(value) == 2 and value[0] == "html":
        return Markup(value[1])
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return fmt(value, 5)
    return str(value)


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = _cell
    return env


def render_page(context: Mapping[str, Any]) -> str:
    """Render ``page.html.j2`` with ``context`` (the keys :func:`write_report` fills)."""
    env = _environment()
    defaults = {"critical_rows": None, "critical_note": "", "metric_rows": None,
                "cell_rows": None, "cell_header": [], "analysis_groups": None,
                "domain_figures": [], "domain_note": "", "version": VERSION,
                "css": (TEMPLATES / "style.css").read_text(encoding="utf-8")}
    return env.get_template("page.html.j2").render(**{**defaults, **context})


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: Any) -> bytes:
    from stabfw._util.plotting import pyplot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def _figures(root: Path) -> list[dict[str, str]]:
    pngs = sorted(root.glob("*.png"), key=lambda p: (
        _FIGURE_ORDER.index(p.name) if p.name in _FIGURE_ORDER else len(_FIGURE_ORDER), p.name))
    return [{"alt": p.name, "src": _data_uri(p.read_bytes()), "title": p.name,
             "caption": _CAPTIONS.get(p.name, "")} for p in pngs]


# --- domain figures -------------------------------------------------------------------
def _cell_label(overrides: Mapping[str, Any]) -> str:
    parts = []
    for k, v in overrides.items():
        if k == "loop.lam":
            try:
                lam = float(v)
                parts.append("λ = " + ("∞" if math.isinf(lam) else fmt(lam, 6)))
                continue
            except (TypeError, ValueError):
                pass
        parts.append(f"{k.split('.')[-1]} = {v}")
    return ", ".join(parts)


def domain_figures(domain: Mapping[str, Any], runs: Mapping[str, Path],
                   root: Path) -> tuple[list[dict[str, str]], str]:
    """The domain's own figures for a page: ``(images, note)``.

    Builds the loop from its ``domain:`` section (construction only stores arguments) and
    asks :meth:`~stabfw.SelfConsumingLoop.report_figures` for ``(title, PNG or Figure)``
    pairs; a run's page also shows what the older ``figures(trajectory, out_dir)`` hook
    draws. A domain whose figures fail loses them, not the page: the note says why.

    Parameters
    ----------
    domain : mapping
        ``{"name": ..., **params}``.
    runs : mapping of label to run directory
    root : path
        The page's directory (an image's ``alt`` is its path relative to it).
    """
    from stabfw.core.loop import SelfConsumingLoop
    from stabfw.run.registry import make

    params = {k: v for k, v in domain.items() if k != "name"}
    images = []
    try:
        loop = make(domain["name"], **params)
        pairs = list(loop.report_figures(dict(runs)))
        if type(loop).figures is not SelfConsumingLoop.figures and len(runs) == 1:
            from stabfw.run.trajectory import Trajectory

            (run_dir,) = runs.values()
            for p in loop.figures(Trajectory.load(run_dir, verify=False), run_dir) or []:
                pairs.append((Path(p).stem, p))
    except Exception as err:  # a figure must never cost the page
        log.warning("domain figures of %s failed: %s: %s", domain.get("name"),
                    type(err).__name__, err)
        log.debug("the domain figures' traceback", exc_info=True)
        return [], f"The domain's figures could not be drawn: {type(err).__name__}: {err}"
    for title, item in pairs:
        if isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                continue
            try:
                alt = str(path.resolve().relative_to(root.resolve()))
            except ValueError:
                alt = path.name
            images.append({"alt": alt, "src": _data_uri(path.read_bytes()), "title": title,
                           "caption": ""})
        else:
            images.append({"alt": title, "src": _data_uri(_figure_png(item)), "title": title,
                           "caption": ""})
    return images, ""


# --- provenance -----------------------------------------------------------------------
def _seeds_text(seeds: list[int]) -> str:
    if not seeds:
        return "—"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]} ({len(seeds)} seeds)"
    shown = ", ".join(str(s) for s in seeds[:50])
    return f"{shown}{', …' if len(seeds) > 50 else ''} ({len(seeds)} seeds)"


def _config_seeds(config: dict[str, Any]) -> list[int]:
    seeds = (config.get("loop") or {}).get("seeds", 10)
    return list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]


def _versions(env: dict[str, Any]) -> list[list[Any]]:
    if not env:
        return []
    rows = [["python", env.get("python", "?")], ["platform", env.get("platform", "?")],
            ["created (UTC)", env.get("created_utc", "?")]]
    return rows + [[k, v] for k, v in (env.get("packages") or {}).items()]


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _run_timings(meta: Mapping[str, Any], analysis: Mapping[str, Any] | None) -> list[list[Any]]:
    """Seconds per phase, as far as they were recorded: the generations, any phases the
    runner recorded (``meta["timings"]``), and each analyzer's own ``wall_time`` /
    ``seconds``."""
    rows: list[list[Any]] = []
    if meta.get("seconds") is not None:
        rows.append(["generations × seeds (the loop)", meta["seconds"]])
    for k, v in (meta.get("timings") or {}).items():
        rows.append([str(k), v])
    for name, result in (analysis or {}).items():
        if not isinstance(result, Mapping):
            continue
        subs = [(None, result)] + [(k, v) for k, v in result.items() if isinstance(v, Mapping)]
        for sub, r in subs:
            for key in ("wall_time", "seconds"):
                if isinstance(r.get(key), (int, float)):
                    rows.append([f"{name}: {sub}" if sub else name, r[key]])
    return rows


# --- pages ----------------------------------------------------------------------------
def _metric_rows(root: Path, summary: Mapping[str, Any]) -> list[list[Any]]:
    means: dict[str, list[float]] = {}
    if (root / "metrics.csv").is_file():
        import pandas as pd

        frame = pd.read_csv(root / "metrics.csv")
        if "generation" in frame.columns:
            by = frame.drop(columns=[c for c in ("seed",) if c in frame.columns])
            g = by.groupby("generation").mean(numeric_only=True)
            means = {c: g[c].tolist() for c in g.columns}
    rows = []
    for name, s in (summary.get("metrics") or {}).items():
        series = means.get(name)
        spark = ("html", sparkline_svg(series, label=name)) if series and len(series) > 1 else "—"
        rows.append([name, spark, s.get("generation_0_mean"), s.get("final_mean"),
                     s.get("final_median"), s.get("final_q10"), s.get("final_q90")])
    return rows


def _run_context(root: Path) -> dict[str, Any]:
    record = yaml.safe_load((root / "config.yaml").read_text()) or {}
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    config = record.get("config") or summary.get("config") or {}
    loop = config.get("loop") or {}
    domain = config.get("domain") or {}
    meta = {**(record.get("meta") or {}), **(summary.get("meta") or {})}
    analysis = summary.get("analysis") or None
    lam = loop.get("lam", "?")
    facts = [["domain", domain.get("name", "?")], ["policy", loop.get("policy", "?")],
             ["λ", lam], ["generations", summary.get("generations", "?")],
             ["seeds", summary.get("n_seeds", len(record.get("seeds") or []))],
             ["dim θ", summary.get("dim_theta", "?")], ["path", meta.get("path", "?")],
             ["non-finite events", (summary.get("nonfinite") or {}).get("text", "none")]]
    dom, note = (domain_figures(domain, {_cell_label({"loop.lam": lam}): root}, root)
                 if domain.get("name") else ([], ""))
    return {
        "title": f"stabfw run: {domain.get('name', '?')}, {loop.get('policy', '?')}, λ = {lam}",
        "subtitle": str(root.resolve()),
        "card": summary_card((analysis or {}).get("headline"), [lam]),
        "facts": facts, "figures": _figures(root), "domain_figures": dom, "domain_note": note,
        "metric_rows": _metric_rows(root, summary),
        "analysis_groups": analysis_groups(analysis),
        "provenance": {"timings": _run_timings(meta, analysis),
                       "seeds": _seeds_text(list(record.get("seeds") or [])),
                       "versions": _versions(record.get("environment") or {}),
                       "config": _yaml(config)},
    }


def _pick(summary: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    v: Any = summary
    for k in path:
        if not isinstance(v, Mapping):
            return None
        v = v.get(k)
    return v


def _cell_analysis(summary: Mapping[str, Any]) -> list[Any]:
    """Verdict, rate and ρ(J) of one cell, from its headline row when it has one."""
    rows = _pick(summary, ("analysis", "headline", "rows")) or []
    if rows:
        r = rows[0]
        verdict = r.get("verdict")
        cls = "good" if r.get("stable") else ("bad" if r.get("stable") is False else "muted")
        return [("html", f'<span class="{cls}">{verdict}</span>') if verdict else "—",
                r.get("rate"), r.get("rho")]
    fp = _pick(summary, ("analysis", "fixed_point")) or {}
    return [fp.get("verdict") or "—", fp.get("rate"), None]


def _sweep_context(root: Path) -> dict[str, Any]:
    index = read_json(root / "index.json")
    config = index.get("config") or {}
    grid = index.get("grid") or (config.get("sweep") or {}).get("grid") or {}
    domain = config.get("domain") or {}
    stab = read_json(root / "stability.json") if (root / "stability.json").is_file() else {}
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    headline = summary.get("headline") or stab.get("headline")
    cells = index.get("cells") or []
    summaries, records = {}, {}
    for c in cells:
        d = root / c["dir"]
        if (d / "summary.json").is_file():
            summaries[c["cell"]] = read_json(d / "summary.json")
        if (d / "config.yaml").is_file():
            records[c["cell"]] = yaml.safe_load((d / "config.yaml").read_text()) or {}
    metric_names: list[str] = []
    declared: set[str] = set()
    for s in summaries.values():
        metric_names += [m for m in (s.get("metrics") or {}) if m not in metric_names]
        declared |= set((s.get("meta") or {}).get("metric_info") or {})
    # the domain's own metrics first, then the framework's (distance to θ*, λ realised)
    metric_names = sorted((m for m in metric_names if m not in ("n_real", "n_synthetic")),
                          key=lambda m: m not in declared)[:4]
    header = ["cell", *grid, "status", "seconds", "verdict", "rate", "ρ(J)",
              *[f"{m} final mean" for m in metric_names], "report"]
    cell_rows = []
    for c in cells:
        s = summaries.get(c["cell"], {})
        link = f"{c['dir']}/report.html"
        cell_rows.append([c["cell"], *[c.get("overrides", {}).get(k) for k in grid],
                          c.get("status"), c.get("seconds"), *_cell_analysis(s),
                          *[_pick(s, ("metrics", m, "final_mean")) for m in metric_names],
                          ("html", f'<a href="{link}">page</a>') if (root / link).is_file()
                          else "—"])
    status: dict[str, int] = {}
    for c in cells:
        status[c.get("status")] = status.get(c.get("status"), 0) + 1
    facts = [["domain", domain.get("name", "?")], ["cells", len(cells)],
             ["status", ", ".join(f"{v} {k}" for k, v in status.items())],
             ["backend", index.get("backend", "?")],
             *[[f"grid: {k}", ", ".join(fmt(v, 6) if not isinstance(v, str) else v
                                        for v in vals)] for k, vals in grid.items()]]
    crit_rows = [[c.get("text", "")] for c in stab.get("critical") or []]
    finished = [c for c in cells if c.get("status") != "failed" and c["cell"] in records]
    dom, note = [], ""
    if finished and domain.get("name"):
        cell_domain = ((records[finished[0]["cell"]].get("config") or {}).get("domain")
                       or domain)
        dom, note = domain_figures(cell_domain, {_cell_label(c.get("overrides") or {}):
                                                 root / c["dir"] for c in finished}, root)
    env = next((r.get("environment") for r in records.values() if r.get("environment")), {})
    timings = [["the whole sweep", index.get("seconds")]] if index.get("seconds") else []
    timings += [[f"cell {c['cell']}", c.get("seconds")] for c in cells
                if c.get("seconds") is not None]
    return {
        "title": f"stabfw sweep: {domain.get('name', '?')} over {', '.join(grid)}",
        "subtitle": str(root.resolve()),
        "card": summary_card(headline, list(grid.get("loop.lam") or [])),
        "facts": facts, "critical_rows": crit_rows,
        "critical_note": stab.get("note", "No critical value computed."),
        "figures": _figures(root), "domain_figures": dom, "domain_note": note,
        "cell_header": header, "cell_rows": cell_rows,
        "provenance": {"timings": timings,
                       "seeds": f"{_seeds_text(_config_seeds(config))} in every cell",
                       "versions": _versions(env or {}), "config": _yaml(config)},
    }


def write_report(run_or_sweep_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run or a sweep directory; return its path.

    Parameters
    ----------
    run_or_sweep_dir : path
        A run directory (``config.yaml`` and ``metrics.csv``) or a sweep directory
        (``index.json``).
    path : path, optional
        Where to write (default: ``<dir>/report.html``).
    """
    root = Path(run_or_sweep_dir)
    if (root / "index.json").is_file():
        context = _sweep_context(root)
    elif (root / "config.yaml").is_file() and (root / "metrics.csv").is_file():
        context = _run_context(root)
    else:
        raise FileNotFoundError(f"{root}: neither a run directory (config.yaml, metrics.csv) "
                                "nor a sweep directory (index.json)")
    page = render_page(context)
    target = Path(path) if path is not None else root / "report.html"
    atomic_write(target, lambda f: f.write(page.encode("utf-8")))
    return target
