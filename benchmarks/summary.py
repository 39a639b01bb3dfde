"""One markdown table of every benchmark's ratio against its target.

Each benchmark reports through ``benchmark.extra_info``:

``ratio``
    the measured speed ratio against a baseline timed in the same process (so it does not
    depend much on the machine);
``target``
    a number (the ratio must be ≥ it) or a text such as ``"ratio ≥ 50×; ≥ 1e6 seed-gen/s"``
    whose first ``ratio ≥ X`` (or leading ``≥ X``) is checked and the rest shown as is;
``target_max`` (optional)
    for a ratio that must stay *below* a bound (an overhead);
``met`` (optional)
    the benchmark's own verdict on a compound target (``"ratio ≥ 1.8 (or ≥ 90 % of the
    machine's ceiling)"``), which then decides the status;
``issue`` (optional)
    the issue that set the target;
any other number
    shown in the details column (absolute rates, overheads, baselines).

Used by ``benchmarks/conftest.py`` at the end of ``make bench``, or on its own to rebuild
the table from a pytest-benchmark JSON file::

    python benchmarks/summary.py benchmarks/results/latest.json > SUMMARY.md
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["machine", "parse_target", "render", "row_from_extra", "write_summary"]

_RESERVED = {"ratio", "target", "target_max", "met", "issue", "note"}


def parse_target(target: Any) -> tuple[str, float] | None:
    """``(">=", x)`` or ``("<=", x)`` from a numeric or text target; None if not checkable."""
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        return ">=", float(target)
    if not isinstance(target, str):
        return None
    m = re.search(r"ratio\s*(≥|>=|≤|<=)\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)", target) or \
        re.match(r"\s*(≥|>=|≤|<=)\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)", target)
    if not m:
        return None
    return (">=" if m.group(1) in ("≥", ">=") else "<="), float(m.group(2))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def row_from_extra(name: str, outcome: str, extra: dict[str, Any] | None,
                   median_s: float | None = None, reason: str = "") -> dict[str, Any]:
    """A table row from one benchmark's outcome and ``extra_info``."""
    extra = dict(extra or {})
    ratio = extra.get("ratio")
    target = extra.get("target")
    check = parse_target(target)
    if extra.get("target_max") is not None:
        check = ("<=", float(extra["target_max"]))
        target = target or f"≤ {extra['target_max']}"
    status = {"passed": "—", "skipped": "skipped", "failed": "FAILED"}.get(outcome, outcome)
    if outcome == "passed" and check is not None and isinstance(ratio, (int, float)):
        ok = ratio >= check[1] if check[0] == ">=" else ratio <= check[1]
        status = "met" if ok else "**missed**"
    if outcome == "passed" and isinstance(extra.get("met"), bool):
        status = "met" if extra["met"] else "**missed**"
    details = [f"{k} = {_fmt(v)}" for k, v in extra.items()
               if k not in _RESERVED and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if median_s is not None:
        details.append(f"median {median_s:.3g} s")
    if extra.get("note"):
        details.append(str(extra["note"]))
    if reason:
        details.append(reason)
    return {"benchmark": name, "issue": extra.get("issue", ""),
            "ratio": _fmt(float(ratio)) + "×" if isinstance(ratio, (int, float)) else "—",
            "target": str(target) if target is not None else "—", "status": status,
            "details": "; ".join(details)}


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        load = "?"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpu = ""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    streams = sys.modules.get("stabfw.core.streams")  # the Gaussian rows depend on it
    draws = "" if streams is None else (", counter-based draws compiled" if streams.COMPILED
                                        else ", counter-based draws in numpy (not compiled)")
    return (f"{platform.platform()}, Python {platform.python_version()}, {cores} cores "
            f"usable, load average {load}{gpu}{draws}")


def render(rows: list[dict[str, Any]], when: str = "", where: str = "") -> str:
    """The markdown page."""
    head = ["benchmark", "issue", "ratio", "target", "status", "details"]
    lines = ["# Benchmark summary", ""]
    if when or where:
        lines += [f"Measured {when} on {where}.".replace(" on .", "."), ""]
    lines += ["Ratios are against a baseline timed in the same process; *met* / *missed* "
              "compare them with the target the issue set. See benchmarks/README.md.", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[h]).replace("|", "\\|") for h in head) + " |")
    met = sum(r["status"] == "met" for r in rows)
    missed = sum(r["status"] == "**missed**" for r in rows)
    lines += ["", f"{len(rows)} benchmarks: {met} met, {missed} missed, "
              f"{sum(r['status'] == 'skipped' for r in rows)} skipped, "
              f"{sum(r['status'] == 'FAILED' for r in rows)} failed.", ""]
    return "\n".join(lines)


def write_summary(rows: list[dict[str, Any]], path: str | Path, when: str = "",
                  where: str = "") -> Path:
    """Write the markdown table (and the rows as JSON beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(rows, when, where or machine()))
    path.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    return path


def rows_from_json(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows from a pytest-benchmark ``--benchmark-json`` file (passed benchmarks only)."""
    return [row_from_extra(b.get("fullname", b["name"]), "passed", b.get("extra_info"),
                           (b.get("stats") or {}).get("median")) for b in data["benchmarks"]]


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/summary.py BENCHMARK_JSON")
    data = json.loads(Path(sys.argv[1]).read_text())
    info = data.get("machine_info") or {}
    where = f"{info.get('node', '?')}, {info.get('cpu', {}).get('brand_raw', '?')}"
    print(render(rows_from_json(data), data.get("datetime", ""), where))
