# The two commands that matter: `make run` (the notebook's study) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench bench-keras clean

setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU wheel that lies on disk here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/cnnbench run

lint: setup
	$(BIN)/ruff check src tests bench

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) cnnbench-results bench/out

# Keras 3 + TensorFlow in a venv of its own, then the same benchmark with Keras beside it.
.venv-keras/.installed:
	$(PYTHON) -m venv .venv-keras
	.venv-keras/bin/pip install --quiet tensorflow-cpu==2.21.0 pyyaml
	touch $@

bench-keras: setup .venv-keras/.installed
	$(BIN)/python bench/bench_engine.py --keras-python .venv-keras/bin/python
