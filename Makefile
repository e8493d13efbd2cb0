# histoflow: `make demo` runs the whole pipeline on the built-in synthetic data; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HF := $(BIN)/histoflow
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint format ui clean-outputs bench

install: $(STAMP)

# Re-installs only when the dependency definitions change; otherwise a no-op.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	@set -euo pipefail; export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	if [ -z "$$(ls -A data 2>/dev/null)" ]; then \
	  echo "== generating the built-in synthetic dataset into data/"; \
	  histoflow data synth --out data --overwrite; \
	  dvc add -q data; \
	fi; \
	start=$$(date +%s); \
	echo "== training flow: dvc stages under Prefect, then MLflow registration"; \
	histoflow run; \
	echo "== monitoring two new batches: one like the training data, one from a differently stained site"; \
	histoflow data synth --out monitoring/inbox/demo_in_distribution --seed 101 --per-class 20 --overwrite; \
	histoflow data synth --out monitoring/inbox/demo_stain_shift --seed 102 --per-class 20 --stain-shift 1.0 --overwrite; \
	rm -rf monitoring/reports/demo_in_distribution monitoring/reports/demo_stain_shift; \
	histoflow monitor --inbox > /dev/null; \
	echo; echo "== done in $$(( $$(date +%s) - start )) s (after installation)"; \
	echo "validation:     reports/validate/report.html"; \
	echo "captions:       reports/captions/gallery.html"; \
	echo "metrics:        metrics/evaluate.json"; \
	echo "plots:          outputs/evaluate/plots/"; \
	for b in demo_in_distribution demo_stain_shift; do \
	  echo "drift report:   monitoring/reports/$$b/drift.html (drift_detected: $$(python -c "import json;print(json.load(open('monitoring/reports/$$b/drift.json'))['drift_detected'])"))"; \
	done; \
	echo "MLflow and Prefect UIs: make ui"

# The evaluation report's test renders it in headless Chromium (Debian's, never a download
# by playwright); installed only when missing.
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

# Workers (pytest-xdist): most of the suite waits on child processes and servers, so three
# workers on two cores finish sooner than one; each file stays on one worker (--dist loadfile)
# so its module fixtures are built once. TEST_WORKERS=0 runs everything in this process.
# One torch/OpenMP thread per worker (and per stage process it starts): with torch's default
# of one thread per core each, three workers' thread pools spun waiting for each other on two
# cores (measured on six heavy test files: 31% less CPU, 25% less time with one thread).
TEST_WORKERS ?= 3
TEST_THREADS ?= 1
test: install browser
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	  --no-loadscope-reorder

lint: install
	$(BIN)/ruff check src tests flows benchmarks
	$(BIN)/ruff format --check src tests flows benchmarks
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests flows benchmarks
	$(BIN)/ruff check --fix src tests flows benchmarks

# Every benchmark in benchmarks/ (see benchmarks/README.md) into benchmarks/results/<date>-<host>.{json,md}.
# QUICK=1: reduced sizes (a smoke run, minutes); BENCH_ARGS: more suite options, e.g. --only qc_throughput.
bench: install
	$(BIN)/python benchmarks/suite.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# MLflow UI on :5000 and Prefect UI on :4200, both reading this project's local stores.
ui: install
	@echo "MLflow UI:  http://127.0.0.1:5000    Prefect UI: http://127.0.0.1:4200    (Ctrl-C stops both)"
	@trap 'kill 0' EXIT; \
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --host 127.0.0.1 --port 5000 & \
	PREFECT_HOME=$(CURDIR)/.prefect $(BIN)/prefect server start --host 127.0.0.1 --port 4200

clean-outputs:
	rm -rf outputs metrics monitoring/reports/* dvc.lock
