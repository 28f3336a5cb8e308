# Each target sets up its virtual environment by itself. torch is installed first and pinned: an
# unpinned torch would make pip fetch several GB of CUDA packages instead of the CPU wheel on disk.
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
FLOOR_PY := $(FLOOR_VENV)/bin/python
STAMP := $(VENV)/.installed
FLOOR_STAMP := $(FLOOR_VENV)/.installed
# The ranges of every dependency; a change reinstalls both environments.
DEPENDENCIES := setup.py nn_prune_ext/dependencies.py

.PHONY: setup setup-floor test test-floor demo bench clean

setup: $(STAMP)

# The newest releases pip resolves within the declared ranges, when .venv is created: what a new
# user gets (`make clean test` resolves afresh). torch stays pinned by a constraint while the rest
# resolves, so no package can pull in another torch.
$(STAMP): $(DEPENDENCIES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt $(TORCH)
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[test]"
	touch $(STAMP)

setup-floor: $(FLOOR_STAMP)

# The lowest release of every dependency (nn_prune_ext/dependencies.py), pinned by a constraints
# file. Needs Python 3.11 or 3.12: numpy 2.0 has no wheels for 3.13.
$(FLOOR_STAMP): $(DEPENDENCIES)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install -q --upgrade pip
	$(PYTHON) nn_prune_ext/dependencies.py floor-constraints > $(FLOOR_VENV)/constraints.txt
	echo "$(TORCH)" >> $(FLOOR_VENV)/constraints.txt
	$(FLOOR_PY) -m pip install -q -c $(FLOOR_VENV)/constraints.txt $(TORCH)
	$(FLOOR_PY) -m pip install -q -c $(FLOOR_VENV)/constraints.txt -e ".[test]"
	touch $(FLOOR_STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-floor: $(FLOOR_STAMP)
	NN_PRUNE_EXT_TEST_ENVIRONMENT=floor $(FLOOR_PY) -m pytest -q tests

# Flags go through ARGS, e.g. make demo ARGS="--method movement --regularization_lambda 20 --output_dir runs/l20"
demo: $(STAMP)
	$(PY) -m nn_prune_ext.demo $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/train_step_overhead.py
	$(PY) benchmarks/train_step_overhead.py --model small --compile --steps 20
	$(PY) benchmarks/slim_speedup.py
	$(PY) benchmarks/posttrain_prune.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache build *.egg-info
