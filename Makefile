# Two entry points: `make serve` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint bench bench-core bench-service bench-accuracy bench-batch bench-shared bench-storage demo clean

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

bench-accuracy: $(STAMP)
	$(BIN)/python -c "import statsforecast" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[peers]'
	$(BIN)/python benchmarks/bench_accuracy.py

bench-service: $(STAMP)
	$(BIN)/python benchmarks/bench_service.py

# 10^4 series x 1,000 (a long run: over an hour on 2 cores); N=200 for a quick one.
# The AutoETS row needs statsforecast (the peers extra), installed here if missing.
N ?= 10000
bench-batch: $(STAMP)
	$(BIN)/python -c "import statsforecast" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[peers]'
	$(BIN)/python benchmarks/bench_batch.py --n-series $(N)

bench-shared: $(STAMP)
	$(BIN)/python benchmarks/bench_shared.py

# SQLite vs PostgreSQL commits (a throwaway PostgreSQL server; needs apt-get install postgresql).
bench-storage: $(STAMP)
	$(BIN)/python benchmarks/bench_storage.py

bench: bench-core bench-accuracy bench-service bench-shared

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
