# Two entry points: `make serve` (the main job) and `make test` (what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint bench bench-core bench-service bench-sensitivity bench-accuracy bench-batch bench-shared bench-storage bench-storage-disk bench-snapshots bench-scale demo docs-examples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[service,batch,plot,dev,peers]'
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

# Each prints its table (value, baseline from the same run, ratio, bar, goal) and writes
# results/<name>.json. CORE_ARGS=--million adds the slow 10^6-episode memory query.
CORE_ARGS ?=
SERVICE_ARGS ?=
bench-core: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py $(CORE_ARGS)

bench-accuracy: $(STAMP)
	$(BIN)/python -c "import statsforecast" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[peers]'
	$(BIN)/python benchmarks/bench_accuracy.py

# Latency phases, then the issue-8 rows (RAM, disk, restart, replay, read-your-writes).
bench-sensitivity: $(STAMP)
	$(BIN)/python benchmarks/bench_sensitivity.py

bench-service: $(STAMP)
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_service_rows.py $(SERVICE_ARGS)

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

# Disk bytes per observation of the SQLite committer alone (the steady ingest's pushes).
bench-storage-disk: $(STAMP)
	$(BIN)/python benchmarks/bench_storage_disk.py

# Snapshot write/load per series: files vs PostgreSQL rows (docs/storage.md).
bench-snapshots: $(STAMP)
	$(BIN)/python benchmarks/bench_snapshots.py

# The Ray engine with 1 and 2 shard actors over a throwaway PostgreSQL (docs/ray.md).
SCALE_ARGS ?=
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py $(SCALE_ARGS)

bench: bench-core bench-accuracy bench-service bench-shared

# The README's replay example, from a real server and replay (needs the bike-share file).
docs-examples: $(STAMP)
	$(BIN)/python benchmarks/regen_docs.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
