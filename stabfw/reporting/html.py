"""A self-contained HTML page for a run or sweep directory (``stabfw report DIR``).

The page embeds every PNG of the directory (base64 ``data:`` URIs), the resolved config,
the analyzer results as a table, the seeds and the package versions; it loads nothing from
anywhere (no scripts, no external style sheets), so it can be mailed or archived alone. A
sweep's page links to its cells' pages by relative paths.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import yaml

from stabfw._util.atomic import atomic_write
from stabfw._util.jsonio import read_json
from stabfw._util.numbers import fmt
from stabfw.run.provenance import VERSION

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#666;font-size:.85em}pre{background:#f7f7f7;padding:.8em;overflow:auto;
font-size:.8em}.ok{color:#1a7f37}.bad{color:#b42318}.muted{color:#888}
.scroll{overflow-x:auto}
"""

_FIGURE_ORDER = ("stability.png", "heatmap.png", "rho_vs_lambda.png", "report.png")
_CAPTIONS = {
    "report.png": "Metrics across generations: median over seeds, band 10–90 %.",
    "stability.png": "The stability diagram: the quantity along the critical axis, mean over "
                     "seeds ± standard error, with the threshold and the critical value.",
    "heatmap.png": "Heat map of a quantity over two swept axes (mean over seeds).",
    "rho_vs_lambda.png": "Measured spectral radius ρ(J) against λ, with Theorem 1's bound.",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _e(v)
    if isinstance(v, float):
        return _e(fmt(v, 5))
    return _e(v)


def _table(header: list[str] | None, rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header or [])
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = []
    for r in rows:
        cells = []
        for v in r:
            if isinstance(v, tuple) and len(v) == 2 and v[0] == "html":  # pre-rendered cell
                cells.append(f"<td>{v[1]}</td>")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f'<td class="num">{_num(v)}</td>')
            else:
                cells.append(f"<td>{_num(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="{cls}">{head}'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figures(root: Path) -> str:
    pngs = sorted(root.glob("*.png"), key=lambda p: (
        _FIGURE_ORDER.index(p.name) if p.name in _FIGURE_ORDER else len(_FIGURE_ORDER), p.name))
    out = []
    for p in pngs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{_e(p.name)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{_e(p.name)} — {_e(_CAPTIONS.get(p.name, ''))}</figcaption>"
                   "</figure>")
    return "\n".join(out) or '<p class="muted">No figures (output.report was off).</p>'


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


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        if len(value) <= 8 and all(not isinstance(v, (dict, list)) for v in value):
            return [(prefix, ", ".join(_num(v) for v in value))]
        return [(prefix, f"[{len(value)} values]")]
    return [(prefix, value)]


def _analysis_section(analysis: Any) -> str:
    if not analysis:
        return ('<p class="muted">No analyzer results (add an <code>analysis:</code> section to '
                "the config to run the fixed-point and Jacobian analyzers).</p>")
    parts = []
    groups = analysis.items() if isinstance(analysis, dict) else [("analysis", analysis)]
    for name, result in groups:
        rows = [[k or name, _verdict_cell(k, v)] for k, v in _flatten(result)]
        parts.append(f"<h3>{_e(name)}</h3>" + _table(["result", "value"], rows, "analysis"))
    return "\n".join(parts)


def _verdict_cell(key: str, value: Any) -> Any:
    if key.split(".")[-1] == "verdict" and isinstance(value, str):
        cls = "ok" if value in ("converged", "stationary_noise", "stationary-noise") else "bad"
        return ("html", f'<span class="{cls}">{_e(value)}</span>')
    return value


def _environment_section(env: dict[str, Any]) -> str:
    if not env:
        return '<p class="muted">Not recorded.</p>'
    rows = [["python", env.get("python", "?")], ["platform", env.get("platform", "?")],
            ["created (UTC)", env.get("created_utc", "?")]]
    rows += [[k, v] for k, v in (env.get("packages") or {}).items()]
    return _table(["component", "version"], rows, "versions")


def _page(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    body = "\n".join(f'<section id="{_e(sid)}"><h2>{_e(head)}</h2>\n{content}</section>'
                     for sid, head, content in ((s[0].lower().replace(" ", "-"), *s)
                                                for s in sections))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"generator\" content=\"stabfw {_e(VERSION)}\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<p class=\"sub\">{_e(subtitle)}</p>\n{body}\n"
            "</body>\n</html>\n")


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _run_page(root: Path) -> str:
    record = yaml.safe_load((root / "config.yaml").read_text()) or {}
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    config = record.get("config") or {}
    loop = config.get("loop") or {}
    domain = (config.get("domain") or {}).get("name", "?")
    meta = record.get("meta") or {}
    facts = [["domain", domain], ["policy", loop.get("policy", "?")],
             ["λ", loop.get("lam", "?")], ["generations", summary.get("generations", "?")],
             ["seeds", summary.get("n_seeds", len(record.get("seeds") or []))],
             ["dim θ", summary.get("dim_theta", "?")], ["path", meta.get("path", "?")],
             ["run time (s)", meta.get("seconds", "?")],
             ["non-finite events", (summary.get("nonfinite") or {}).get("text", "none")]]
    metric_rows = [[name, s.get("generation_0_mean"), s.get("final_mean"), s.get("final_median"),
                    s.get("final_q10"), s.get("final_q90")]
                   for name, s in (summary.get("metrics") or {}).items()]
    sections = [
        ("Overview", _table(None, facts, "facts")),
        ("Figures", _figures(root)),
        ("Metrics", _table(["metric", "generation 0 mean", "final mean", "final median",
                            "final q10", "final q90"], metric_rows, "metrics")),
        ("Analyzer results", _analysis_section(summary.get("analysis"))),
        ("Configuration", f"<pre class=\"config\">{_e(_yaml(config))}</pre>"),
        ("Seeds", f"<p class=\"seeds\">{_e(_seeds_text(list(record.get('seeds') or [])))}</p>"),
        ("Versions", _environment_section(record.get("environment") or {})),
    ]
    lam = loop.get("lam", "?")
    return _page(f"stabfw run: {domain}, {loop.get('policy', '?')}, λ = {lam}",
                 f"{root.resolve()}", sections)


def _sweep_page(root: Path) -> str:
    import pandas as pd

    index = read_json(root / "index.json")
    config = index.get("config") or {}
    grid = index.get("grid") or (config.get("sweep") or {}).get("grid") or {}
    domain = (config.get("domain") or {}).get("name", "?")
    stab = read_json(root / "stability.json") if (root / "stability.json").is_file() else {}
    crit_rows = [[c.get("text", "")] for c in stab.get("critical") or []]
    if crit_rows:
        crit = _table(["critical value"], crit_rows, "critical")
    else:
        crit = f'<p class="muted">{_e(stab.get("note", "No critical value computed."))}</p>'
    agg = pd.read_csv(root / "aggregates.csv") if (root / "aggregates.csv").is_file() else None
    cell_rows, header = [], ["cell", *grid, "status", "report"]
    extra: list[str] = []
    if agg is not None:
        extra = [c for c in agg.columns if c.endswith(".final_mean")][:6]
        extra += [c for c in agg.columns if c.startswith("analysis.")][:8]
        header = ["cell", *grid, "status", *extra, "report"]
        for _, r in agg.iterrows():
            link = f"cells/{r['cell']}/report.html"
            has = (root / link).is_file()
            cell_rows.append([r["cell"], *[r.get(k) for k in grid], r["status"],
                              *[r.get(c) for c in extra],
                              ("html", f'<a href="{_e(link)}">page</a>') if has else "—"])
    env, seeds = {}, _config_seeds(config)
    for c in index.get("cells") or []:
        f = root / c["dir"] / "config.yaml"
        if f.is_file():
            env = (yaml.safe_load(f.read_text()) or {}).get("environment") or {}
            break
    n_cells = len(index.get("cells") or [])
    status = {}
    for c in index.get("cells") or []:
        status[c.get("status")] = status.get(c.get("status"), 0) + 1
    facts = [["domain", domain], ["cells", n_cells],
             ["status", ", ".join(f"{v} {k}" for k, v in status.items())],
             ["backend", index.get("backend", "?")], ["run time (s)", index.get("seconds", "?")],
             *[[f"grid: {k}", ", ".join(_num(v) if not isinstance(v, str) else v for v in vals)]
               for k, vals in grid.items()]]
    sections = [
        ("Overview", _table(None, facts, "facts")),
        ("Critical values", crit),
        ("Figures", _figures(root)),
        ("Cells", _table(header, cell_rows, "cells")),
        ("Configuration", f"<pre class=\"config\">{_e(_yaml(config))}</pre>"),
        ("Seeds", f"<p class=\"seeds\">{_e(_seeds_text(seeds))} in every cell</p>"),
        ("Versions", _environment_section(env)),
    ]
    return _page(f"stabfw sweep: {domain} over {', '.join(grid)}", f"{root.resolve()}", sections)


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
        page = _sweep_page(root)
    elif (root / "config.yaml").is_file() and (root / "metrics.csv").is_file():
        page = _run_page(root)
    else:
        raise FileNotFoundError(f"{root}: neither a run directory (config.yaml, metrics.csv) "
                                "nor a sweep directory (index.json)")
    target = Path(path) if path is not None else root / "report.html"
    atomic_write(target, lambda f: f.write(page.encode("utf-8")))
    return target
