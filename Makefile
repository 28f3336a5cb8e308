# Each target sets up .venv by itself. torch is installed first and pinned: an unpinned torch
# would make pip fetch several GB of CUDA packages instead of the CPU wheel on disk.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Flags go through ARGS, e.g. make demo ARGS="--regularization_lambda 20 --output_dir runs/l20"
demo: $(STAMP)
	$(PY) -m nn_prune_ext.demo $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/train_step_overhead.py
	$(PY) benchmarks/slim_speedup.py
	$(PY) benchmarks/posttrain_prune.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
