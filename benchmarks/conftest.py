"""Benchmark-suite plumbing: collect ``bench_*.py`` files and, at the end of the session,
write every benchmark's ratio and target into ``benchmarks/results/SUMMARY.md``
(see ``summary.py`` for what a benchmark reports and ``README.md`` for how to read it)."""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

_HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("stabfw_bench_summary", _HERE / "summary.py")
summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary)

_ROWS: dict[str, dict] = {}


def pytest_collect_file(file_path: Path, parent):
    """Benchmarks live in ``bench_*.py`` (so that ``pytest tests`` never collects them)."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    # pytest collects a file named on the command line (or matching python_files) itself
    patterns = parent.config.getini("python_files")
    if parent.session.isinitpath(file_path) or any(file_path.match(p) for p in patterns):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        bench = getattr(item, "funcargs", {}).get("benchmark")
        extra = dict(getattr(bench, "extra_info", {}) or {})
        median = None
        stats = getattr(bench, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            median = stats.stats.median
        reason = ""
        if rep.skipped and isinstance(rep.longrepr, tuple):
            reason = str(rep.longrepr[2]).removeprefix("Skipped: ")
        elif rep.failed:
            reason = str(rep.longrepr).strip().splitlines()[-1][:200] if rep.longrepr else ""
        name = item.nodeid.split("/")[-1]
        _ROWS[item.nodeid] = summary.row_from_extra(name, rep.outcome, extra, median, reason)


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    path = Path(os.environ.get("STABFW_BENCH_SUMMARY", _HERE / "results" / "SUMMARY.md"))
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary.write_summary(list(_ROWS.values()), path, when)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"benchmark summary: {path}")
