# The two README commands. Each creates .venv with the system python3 when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench bench-gpu lint install clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make demo: the main job, softmax vs SVM vs logistic on MNIST-5k -> artifacts/reports/mnist5k/
demo: $(STAMP)
	$(BIN)/featclf compare --out artifacts/reports/mnist5k

## make test: the whole test suite (slow tests included), doctests, notebooks and ruff
test: $(STAMP)
	$(BIN)/ruff check featclf tests benchmarks tools notebooks/src conftest.py
	$(BIN)/python -m pytest -p no:cacheprovider

## make bench: the benchmark suite (not part of make test); JSON under artifacts/benchmarks/
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## make bench-gpu: on a CUDA machine, the GPU tests and the extraction benchmark on the GPU only
bench-gpu: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m gpu tests
	$(BIN)/python benchmarks/extract_throughput.py --devices cuda --out-dir artifacts/benchmarks/gpu

lint: $(STAMP)
	$(BIN)/ruff check featclf tests benchmarks tools notebooks/src conftest.py

clean-venv:
	rm -rf $(VENV)
