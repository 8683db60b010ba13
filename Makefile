# The two README commands. Each creates .venv with the system python3 when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench bench-gpu lint install chromium screenshots clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make chromium: Debian's Chromium for the report's browser test (tests/test_report_browser.py)
## and tools/report_screenshot.py; Playwright (a dev extra) drives it, no browser is downloaded
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	@if command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; \
	else \
		echo "no apt-get: install Chromium yourself and set FEATCLF_CHROMIUM=/path/to/it" \
		     "(without it the browser test is skipped)"; \
	fi

chromium: $(CHROMIUM)

## make demo: the main job, softmax vs SVM vs logistic on MNIST-5k -> artifacts/reports/mnist5k/
demo: $(STAMP)
	$(BIN)/featclf compare --out artifacts/reports/mnist5k

## make test: the whole test suite (slow tests included), doctests, notebooks and ruff
test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check featclf tests benchmarks tools notebooks/src conftest.py
	$(BIN)/python -m pytest -p no:cacheprovider

## make screenshots: the demo report in headless Chromium at 1280 px and 390 px (phone); fails
## when something overflows or overlaps
screenshots: $(STAMP) $(CHROMIUM)
	$(BIN)/python tools/report_screenshot.py artifacts/reports/mnist5k/report.html \
		artifacts/reports/mnist5k/screenshot.png --phone artifacts/reports/mnist5k/screenshot_phone.png

## make bench: the benchmark suite (not part of make test); JSON under artifacts/benchmarks/
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## make bench-gpu: on a CUDA machine, the GPU tests, then extraction and linear solvers on the GPU
bench-gpu: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m gpu tests
	$(BIN)/python benchmarks/extract_throughput.py --devices cuda --out-dir artifacts/benchmarks/gpu
	$(BIN)/python benchmarks/linear_solvers.py --gpu-only --out-dir artifacts/benchmarks/gpu

lint: $(STAMP)
	$(BIN)/ruff check featclf tests benchmarks tools notebooks/src conftest.py

clean-venv:
	rm -rf $(VENV)
