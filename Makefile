# One command each on a fresh machine: every target bootstraps .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-10)
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: venv test test-core test-notebooks test-browser lint bench demo lab clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: $(STAMP)
	$(BIN)/ruff check neon_nb tests benchmarks

test-core: $(STAMP)
	$(PYTEST) tests --ignore=tests/browser

test-notebooks: $(STAMP)
	$(PYTEST) --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks

test-browser: $(STAMP)
	$(PYTEST) tests/browser

test: lint test-core test-notebooks test-browser

bench: $(STAMP)
	$(BIN)/python -m benchmarks

demo: $(STAMP)
	$(BIN)/python -m neon_nb.demo

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
