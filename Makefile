# labcache: `make lab` to learn, `make test` to check everything. Needs Python 3.10+ and make.
#
#   make lab     JupyterLab on notebooks/ (creates .venv on first use)
#   make test    lint + type check + tests + notebooks (nbval) + quick benchmark
#   make test-python PYTHON=python3.13
#                the library tests only (no notebooks, no browser) in .venv-3.13, a venv of
#                that interpreter's own; CI runs it with the oldest and newest supported Pythons
#   make lint    ruff check, ruff format --check, mypy
#   make format  ruff format + ruff check --fix
#   make notebooks  re-execute every notebook and store it with its outputs (as nbval runs it)
#                and a PNG of every figure (kaleido: needs Chromium, apt-get install chromium),
#                without widget state or timestamps
#   make bench   the full benchmark (BENCH_ARGS=... for options)
#   make data    regenerate data/ with the seeded generator
#   make clean   remove caches, artifacts and labcache's runtime folder
#                (distclean: also .venv and the .venv-3.* of test-python)
#
# Variables: PYTHON (the interpreter that creates .venv), PYTEST_ARGS, BENCH_ARGS, LAB_ARGS, PORT.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when pyproject.toml is newer than the last install.
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= lab,dev,bench

PORT ?= 8888
LAB_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
SANITIZE := notebooks/sanitize.cfg

# JupyterLab refuses to run as root without --allow-root (containers, CI).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
# No graphical session on Linux: print the URL instead of launching a terminal browser.
NO_BROWSER := $(if $(filter Linux,$(shell uname -s 2>/dev/null)),$(if $(DISPLAY)$(WAYLAND_DISPLAY),,--no-browser),)

# The library tests: tests/ without the ones that drive a browser or execute notebooks.
LIBRARY_TESTS := -m "not browser and not notebook"

.PHONY: lab test test-python test-library lint format notebooks bench data clean distclean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "labcache needs Python 3.10+, $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=python3.12 ...")'
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV) with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
			echo "could not create $(VENV): on Debian/Ubuntu, apt-get install python3-venv" >&2; \
			exit 1; }; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
		--ServerApp.port=$(PORT) $(ALLOW_ROOT) $(NO_BROWSER) $(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy labcache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# nbval re-runs each notebook in the venv's kernel and compares its stored outputs; the plain
# tests in tests/ run as usual. The suite starts its own redis-server (tests/conftest.py).
test: lint
	$(BIN)/pytest -p no:cacheprovider -ra tests $(NOTEBOOKS) \
		--nbval --nbval-current-env --nbval-sanitize-with $(SANITIZE) $(PYTEST_ARGS)
	@if [ -f labcache/bench.py ] || [ -f labcache/bench/__init__.py ]; then \
		echo "$(BIN)/python -m labcache.bench --quick"; \
		$(BIN)/python -m labcache.bench --quick; \
	else \
		echo "labcache/bench.py not present yet: skipping the quick benchmark"; \
	fi

# test-python names the venv after $(PYTHON)'s version, then runs test-library in it.
test-python:
	@version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
		|| { echo "$(PYTHON) does not run here: try make test-python PYTHON=python3.13" >&2; \
			exit 1; }; \
	$(MAKE) --no-print-directory test-library PYTHON=$(PYTHON) VENV=.venv-$$version

test-library: $(STAMP)
	@echo "library tests with $$($(BIN)/python --version) in $(VENV)"
	$(BIN)/pytest -p no:cacheprovider -ra tests $(LIBRARY_TESTS) $(PYTEST_ARGS)

# Against a redis-server of its own, as the suite's ACL-fenced student: what nbval compares.
notebooks: $(STAMP)
	$(BIN)/python -m tests.notebook_runner $(NOTEBOOKS)

bench: $(STAMP)
	$(BIN)/python -m labcache.bench $(BENCH_ARGS)

data: $(STAMP)
	$(BIN)/python -m labcache.lab.data

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .labcache artifacts bench-results \
		build dist *.egg-info
	find . \( -path ./$(VENV) -o -path './.venv-3.*' \) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .venv-3.*
