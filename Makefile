# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs floq (CUDA extra when nvidia-smi sees a GPU), generates
#               the demo dataset if it is not cached, trains FQL with a monolithic and a floq
#               critic, evaluates both in the simulator and writes a report
#   make test   creates .venv with the dev extra and runs the test suite (make test-fast: the
#               inner loop, unit and in-process tests only; tests/README.md says what runs where)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Caches live outside the clone, so a second clone on the same machine starts warm: generated
# datasets ($(FLOQ_DATA_DIR)) and, for the tests, compiled programs and test datasets keyed by
# the jax and generator versions (tests/floq_test_utils.py).
export FLOQ_CACHE_DIR ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/floq
export FLOQ_DATA_DIR ?= $(FLOQ_CACHE_DIR)/data
# The suite runs in TEST_WORKERS pytest-xdist processes, tests handed out one at a time
# (a module whose tests share module state runs on one worker: its xdist_group, which
# tests/conftest.py makes pytest-xdist 3.8 honour under pytest 9.2); session
# fixtures are built once across workers. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

.PHONY: demo test test-fast test-full test-cold test-isa install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing floq[cuda]"; $(PY) -m pip install -q -e '.[cuda]'; \
	else \
		$(PY) -m pip install -q -e .; \
	fi
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) -m floq.demo

test: $(VENV)/.installed-dev
	$(PYTEST) tests

# The inner loop: no test that trains for long or starts processes (markers slow, subprocess).
test-fast: $(VENV)/.installed-dev
	$(PYTEST) tests -m "not slow and not subprocess"

test-full: $(VENV)/.installed-dev
	FLOQ_FULL_TESTS=1 $(PYTEST) tests

# The golden runs again with XLA compiling for a smaller instruction set (AVX: no AVX2, no
# AVX-512), so that a check holding on one CPU only cannot come back (tests/golden/README.md).
test-isa: $(VENV)/.installed-dev
	XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_cpu_max_isa=AVX" $(PY) -m pytest -n 0 tests/test_golden.py

# The whole suite with empty caches (what a first clone on a new machine sees).
test-cold: $(VENV)/.installed-dev
	@cold=$$(mktemp -d); echo "empty cache: $$cold"; \
	FLOQ_CACHE_DIR=$$cold env -u JAX_COMPILATION_CACHE_DIR $(PYTEST) tests; rc=$$?; rm -rf $$cold; exit $$rc

clean:
	rm -rf runs/quickstart reports/quickstart .pytest_cache
