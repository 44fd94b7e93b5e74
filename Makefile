# make demo   set up .venv (first run only) and run the main job: torch vs flax parity table + timings
# make test   set up .venv (first run only) and run the test suite without the slow set (what CI runs)
# make test-slow / test-all   only the slow (B/16-size, multi-process, long-run) checks / everything
# make test-mutations         the parity suite's own power: every catalogued slip must be caught
# make bench  the inference and conversion benchmarks (results in benchmarks/results/)
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# torch is pinned to the build that lies on the development machine's disk; torchvision
# beside it keeps a later timm install from moving torch. pyproject.toml keeps lower bounds only.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST := $(PY) -m pytest -n 2

.PHONY: setup demo test test-fast test-slow test-all test-mutations bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]' $(TORCH_PINS)
	touch $@

demo: setup
	$(VENV)/bin/vit-demo

test: setup
	$(PYTEST) -m "not slow"

test-fast: test

test-all: setup
	$(PYTEST)

test-slow: setup
	$(PYTEST) -m slow

test-mutations: setup
	$(PYTEST) parity_tests/test_mutations.py -v

bench: setup
	$(PY) -m pip install --quiet -e '.[bench]' $(TORCH_PINS)
	$(PY) benchmarks/inference_benchmark.py
	$(PY) benchmarks/convert_benchmark.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
