# One command each on a fresh machine: every target bootstraps its venv on first use.
#
#   make lab     JupyterLab on notebooks/            make demo    the headless demo
#   make test    lint + core tests + notebooks + browser tests (what CI runs)
#   make bench   the benchmarks (python -m benchmarks; QUICK=1 for a smoke run)
#
# A second interpreter gets its own venv, e.g. the core tests on Python 3.13:
#   make test-core PYTHON=/root/.pyenv/versions/3.13.0/bin/python VENV=.venv313 EXTRAS=test
# (`make test-py313` does exactly that). A pytest run that collects no test exits with 5,
# which make, like any non-zero status, treats as a failure.
PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= dev
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(EXTRAS)-$(shell cat pyproject.toml | md5sum | cut -c1-10)
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider
PY313  ?= /root/.pyenv/versions/3.13.0/bin/python

# The core tests: everything but the browser suite. With EXTRAS=test (no ipywidgets, no dask)
# the suites that need the notebook or dask extras are left out as well.
ifeq ($(EXTRAS),test)
CORE_TESTS ?= tests --ignore=tests/browser --ignore=tests/widgets --ignore=tests/backends
else
CORE_TESTS ?= tests --ignore=tests/browser
endif

.PHONY: venv test test-core test-py313 test-notebooks test-browser lint bench demo lab clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: $(STAMP)
	$(BIN)/ruff check neon_nb tests benchmarks

test-core: $(STAMP)
	$(PYTEST) $(CORE_TESTS)

test-py313:
	$(MAKE) test-core PYTHON=$(PY313) VENV=.venv313 EXTRAS=test

test-notebooks: $(STAMP)
	$(PYTEST) --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

test-browser: $(STAMP)
	$(PYTEST) tests/browser

test: lint test-core test-notebooks test-browser

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick)

demo: $(STAMP)
	$(BIN)/python -m neon_nb.demo

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf .venv .venv313 .pytest_cache .ruff_cache build *.egg-info test-artifacts
