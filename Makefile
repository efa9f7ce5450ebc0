# One command to set up and run the search on the embedded corpus, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COQUI_STAMP := $(VENV)/.installed-coqui
# The Coqui quick study (docs/coqui.md): its corpus, and the command each trial runs. The trainer is
# this venv's Python by path (`-I`: Coqui's `trainer` package, not the project's; see the runner).
COQUI_CORPUS := runs/coqui-corpus
COQUI_SPACE := examples/coqui/space.toml
COQUI_CMD := $(abspath $(PY)) -I examples/coqui/coqui_runner.py --config {config} --out {run_dir} --seed {seed} \
	--train-data $(COQUI_CORPUS)/dataset_train --val-data $(COQUI_CORPUS)/dataset_eval --steps 100 --eval-every 20 --tiny

.PHONY: setup setup-coqui run test lint bench gpu-check coqui-quick

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The `coqui` extra (Coqui TTS and its Trainer) for the Coqui study and its test; `lightning` and `hf` for
# the adapters' tests. librosa's numba functions compile on first use (~65 s) and cache on disk: compile
# them here, not in the first trial.
$(COQUI_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,coqui,lightning,hf]'
	$(PY) -c "import numpy as np, librosa; librosa.stft(np.zeros(4096, dtype=np.float32), n_fft=1024, hop_length=256); librosa.feature.melspectrogram(S=np.ones((513, 10)), sr=22050, n_mels=80)"
	touch $(COQUI_STAMP)

setup-coqui: $(COQUI_STAMP)

# The CPU-sized study on the embedded corpus, its report, and the best trial exported as a preset.
run: setup
	$(PY) search.py --study stability-quick --trials 10 --workers 2
	@# The seed's question needs each recipe's distance to the lr edge: found next to the edge the trials saw
	@# (exits 2, and the report says "not measured", when the study has no feasible trial to call best).
	-$(PY) search.py --study stability-quick --margin basic enhanced best --workers 2
	$(PY) search.py --study stability-quick --report
	@# Exits 2 with the reason when no trial speaks at the speech rung (or none was feasible at all).
	-$(PY) search.py --study stability-quick --export-preset runs/stability-quick/best_preset.json

# The suite with the `coqui`, `lightning` and `hf` extras installed, so tests/test_coqui.py runs its Coqui
# study and the adapters' tests run their trainers. One pytest worker a core (each test trains at one torch
# thread, tests/conftest.py), a test file's tests on one worker so its module fixtures are built once.
test: setup-coqui
	$(PY) -m pytest -q -n auto --dist loadfile --durations=25

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

# The Coqui TTS quick study (docs/coqui.md): 12 trials of Coqui's own Trainer on a shrunk Tacotron 2,
# guarded by this project, then runs/coqui-quick/report.html and the best trial as Coqui's config.json.
coqui-quick: setup-coqui
	$(PY) -m tts_model.corpus --out $(COQUI_CORPUS) --utterances 200
	$(PY) search.py --study coqui-quick --space $(COQUI_SPACE) --trials 12 --command "$(COQUI_CMD)"
	$(PY) search.py --study coqui-quick --space $(COQUI_SPACE) --report
	@# Coqui's config.json with the best feasible trial's values; exits 2 with the reason when none is feasible.
	-$(PY) search.py --study coqui-quick --space $(COQUI_SPACE) --export-preset runs/coqui-quick/best_config.json
