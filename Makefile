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
# jax's persistent compilation cache, fresh for each run and shared by the two test workers and
# every process they start (the mutation checks, the docs' snippets, the tools): an executable is
# compiled once per run, not once per process (the components' parity alone: 112 s -> 91 s)
JAX_CACHE := $(CURDIR)/.jax_cache
PYTEST := rm -rf $(JAX_CACHE) && JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
          JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 $(PY) -m pytest -n 2

.PHONY: setup demo test test-fast test-slow test-all test-mutations bench clean

setup: $(VENV)/.installed

# The first set-up installs ~6.5 GB (torch's CUDA build is most of it): a few minutes, each step
# announced and pip's own progress shown (--progress-bar on draws bars when a terminal is attached).
$(VENV)/.installed: pyproject.toml Makefile
	@echo "== set-up 1/3: creating $(VENV) (first run only)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== set-up 2/3: torch and torchvision ($(TORCH_PINS), ~5.5 GB)"
	$(PY) -m pip install --progress-bar on $(TORCH_PINS)
	@echo "== set-up 3/3: the project with jax, flax and the test oracles (transformers, timm)"
	$(PY) -m pip install --progress-bar on -e '.[test]' $(TORCH_PINS)
	@echo "== set-up done: $(VENV) ($$(du -sh $(VENV) | cut -f1))"
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
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis $(JAX_CACHE)
