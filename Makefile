# One command each on a fresh machine: every target bootstraps its venv on first use.
#
#   make lab     JupyterLab on notebooks/            make demo    the headless demo
#                (PORT=8888, IP=localhost; as root it adds --allow-root)
#   make test    lint + core tests + notebooks + browser tests (what CI runs; as root it
#                installs Debian's chromium for the browser tests if it is missing)
#   make bench   the benchmarks (python -m benchmarks; QUICK=1 for a smoke run, SCALE=1 for the
#                10^6-task figures alone)
#   (make demo also writes the run's HTML report, to REPORT=demo-report.html by default)
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
# Where `make demo` writes the run's HTML report.
REPORT ?= demo-report.html

# `make lab`: where JupyterLab listens. IP=0.0.0.0 listens on every interface (reachable from
# other machines: anyone with the token can run code). port_retries=0: a busy port is an error,
# not a silent move to another port that the printed SSH line would not match.
PORT   ?= 8888
IP     ?= localhost
# --allow-root only when run as root (containers, cloud VMs, CI): Jupyter refuses root otherwise.
# --no-browser on Linux without a display: a headless machine has no browser to open.
LAB_FLAGS = --ServerApp.ip=$(IP) --ServerApp.port=$(PORT) --ServerApp.port_retries=0 \
	$(if $(filter 0,$(shell id -u)),--allow-root) \
	$(if $(filter Linux,$(shell uname -s)),$(if $(DISPLAY)$(WAYLAND_DISPLAY),,--no-browser))
# The host an SSH tunnel forwards to: the listening address, or localhost for "every interface".
LAB_HOST = $(if $(filter 0.0.0.0 ::,$(IP)),localhost,$(IP))

# The core tests: everything but the browser suite. With EXTRAS=test (no ipywidgets, no dask)
# the suites that need the notebook or dask extras, and the dev tooling, are left out as well.
ifeq ($(EXTRAS),test)
CORE_TESTS ?= tests --ignore=tests/browser --ignore=tests/widgets --ignore=tests/backends --ignore=tests/tooling --ignore=tests/plots
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
	$(BIN)/python -m mypy neon_nb

test-core: $(STAMP)
	$(PYTEST) $(CORE_TESTS)

test-py313:
	$(MAKE) test-core PYTHON=$(PY313) VENV=.venv313 EXTRAS=test

test-notebooks: $(STAMP)
	$(PYTEST) --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

# The browser tests drive Debian's chromium: installed first when run as root, otherwise a clear
# failure naming the command to run. NEON_NB_REQUIRE_BROWSER=1: a missing browser fails the suite,
# never a quiet skip.
test-browser: $(STAMP)
	.ci/install-chromium
	NEON_NB_REQUIRE_BROWSER=1 $(PYTEST) tests/browser

test: lint test-core test-notebooks test-browser

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick) $(if $(SCALE),--scale)

demo: $(STAMP)
	$(BIN)/python -m neon_nb.demo --report $(REPORT)

# The token is chosen here (or taken from JUPYTER_TOKEN) so the URL can be printed before the
# server's own log; `exec` makes Ctrl-C and signals reach JupyterLab itself.
lab: $(STAMP)
	@token="$${JUPYTER_TOKEN:-$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(24))')}"; \
	echo "JupyterLab on notebooks/ at  http://$(LAB_HOST):$(PORT)/lab?token=$$token"; \
	echo "  Headless machine? On your own computer run:"; \
	echo "      ssh -N -L $(PORT):$(LAB_HOST):$(PORT) $$(id -un)@$$(hostname -f 2>/dev/null || hostname)"; \
	echo "  then open the URL above in its browser. Another port: make lab PORT=8890. Stop: Ctrl-C twice."; \
	JUPYTER_TOKEN="$$token" exec $(BIN)/jupyter lab $(LAB_FLAGS) notebooks

clean:
	rm -rf .venv .venv313 .pytest_cache .ruff_cache build *.egg-info test-artifacts demo-report.html
