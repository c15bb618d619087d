# Two entry points: `make serve` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint bench bench-core bench-service bench-accuracy demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[service,batch,plot,dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/episodic-koopman serve --data-dir ./var

test: $(STAMP)
	$(BIN)/ruff check src service tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src service tests benchmarks
	$(BIN)/ruff format --check src service tests benchmarks

demo: $(STAMP)
	$(BIN)/episodic-koopman demo

bench-core: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

bench-service: $(STAMP)
	$(BIN)/python benchmarks/bench_service.py

bench: bench-core bench-accuracy bench-service

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

bench-accuracy: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[peers]'
	$(BIN)/python benchmarks/bench_accuracy.py
