# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs floq (CUDA extra when nvidia-smi sees a GPU), generates
#               the demo dataset if it is not cached, trains FQL with a monolithic and a floq
#               critic, evaluates both in the simulator and writes a report
#   make test   creates .venv with the dev extra and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export FLOQ_DATA_DIR ?= $(CURDIR)/.floq_cache/data

.PHONY: demo test test-full install install-dev clean

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
	$(PY) -m pytest tests

test-full: $(VENV)/.installed-dev
	FLOQ_FULL_TESTS=1 $(PY) -m pytest tests

clean:
	rm -rf runs/quickstart reports/quickstart .pytest_cache
