# One command to set up and run the search on the embedded corpus, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The CPU-sized study on the embedded corpus, its report, and the best trial exported as a preset.
run: setup
	$(PY) search.py --study stability-quick --trials 20
	$(PY) search.py --study stability-quick --report
	@# Exits 2 with the reason when no trial was feasible (none aligned and stopped its decode).
	-$(PY) search.py --study stability-quick --export-preset runs/stability-quick/best_preset.json

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) bench/bench_model_speed.py
	$(PY) bench/bench_telemetry_overhead.py

# On a CUDA machine: speed of the seed's model, trial throughput with 1/2/4 workers per GPU, and the
# real study for 3 short trials (under 8 minutes). Without a GPU it says so and exits 0.
gpu-check: setup
	$(PY) bench/gpu_check.py
