# The two commands: `make run` (the headless notebook pipeline on the default model and
# data) and `make test`. Both create or reuse .venv and install only when pyproject.toml
# changed (the stamp file), so a second call reinstalls nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sftlib-installed
ARGS ?=
PORT ?= 8888

.PHONY: run test lab lint bench browser-deps clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m sftlib run $(ARGS)

test: $(STAMP) browser-deps
	$(PY) -m ruff check sftlib tests benchmarks
	$(PY) -m pytest -q $(ARGS)

# Debian's Chromium for the JupyterLab browser test (Playwright's own browser download
# cannot work offline). Skipped quietly where apt is not available or we are not root.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test is skipped (and fails when CI=true)"; }

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=$(CURDIR)

bench: $(STAMP)
	$(PY) -m benchmarks.bench_train $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check sftlib tests benchmarks

clean-venv:
	rm -rf $(VENV)
