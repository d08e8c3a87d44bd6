# The two commands that matter: `make run` (the notebook's study) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run run-fast test test-fast lint bench bench-keras bench-study clean

setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU wheel that lies on disk here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Two runs at once, one per core (1.1-1.3x the images a second of one run on two threads).
JOBS ?= 2

run: setup
	$(BIN)/cnnbench run --jobs $(JOBS)

# The same study in bf16 where the CPU has bf16 units (else fp32): about twice as fast.
run-fast: setup
	$(BIN)/cnnbench run --jobs $(JOBS) --precision auto --out cnnbench-results-fast

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Everything, as CI runs it (-ra: every skip prints its reason; under CI=true a skip fails).
test: lint
	$(BIN)/python -m pytest -q -ra

# The edit-test loop: the tests not marked slow (under a minute; README, Development).
test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: setup
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) cnnbench-results cnnbench-results-fast bench/out

# Keras 3 + TensorFlow in a venv of its own, then the same benchmark with Keras beside it.
.venv-keras/.installed:
	$(PYTHON) -m venv .venv-keras
	.venv-keras/bin/pip install --quiet tensorflow-cpu==2.21.0 pyyaml
	touch $@

bench-keras: setup .venv-keras/.installed
	$(BIN)/python bench/bench_engine.py --keras-python .venv-keras/bin/python

# The whole study: `make run`'s and `make run-fast`'s commands, then Keras model.fit, back to
# back (about an hour here).
bench-study: setup .venv-keras/.installed
	$(BIN)/python bench/bench_study.py --keras-python .venv-keras/bin/python \
		--keras-policy float32 --keras-policy mixed_bfloat16 \
		--run "--jobs $(JOBS)" --run "--jobs $(JOBS) --precision auto"
