# The two commands: `make run` (the headless notebook pipeline on the default model and
# data) and `make test`. Both create or reuse .venv and install only when pyproject.toml
# changed (the stamp file), so a second call reinstalls nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sftlib-installed
ARGS ?=
PORT ?= 8888
# what JupyterLab adds on save that is not source (the kernel's Python version); the tests
# strip with the same keys (tests/notebook_checks.py)
STRIP_KEYS := metadata.language_info

.PHONY: run test test-fast lab lint strip git-filters bench browser-deps clean-venv tensorboard

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

run: $(STAMP) git-filters
	$(PY) -m sftlib run $(ARGS)

# Two pytest workers (pytest-xdist), one thread each (tests/conftest.py): much of the suite
# waits on one core (imports, kernel start-up, HTML export). Tests that share an expensive run
# go to one worker together (--dist loadgroup), so each run is built once. TEST_WORKERS=0 runs
# them in one process. Longest work first (tests/conftest.py), in that order.
TEST_WORKERS ?= 2

test: $(STAMP) browser-deps git-filters
	$(PY) -m ruff check sftlib tests benchmarks notebooks
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(ARGS)

# The inner loop: lint and the unit tests, without papermill, training or the browser.
test-fast: $(STAMP) git-filters
	$(PY) -m ruff check sftlib tests benchmarks notebooks
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow" $(ARGS)

# nbstripout as this clone's git filter (.gitattributes names it): what `git add` stores of a
# notebook is its source, whatever outputs JupyterLab saved. Skipped outside a git checkout.
git-filters: $(STAMP)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean "'$(abspath $(PY))' -m nbstripout" && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.required true && \
	  git config filter.nbstripout.extrakeys "$(STRIP_KEYS)" && \
	  git config diff.ipynb.textconv "'$(abspath $(PY))' -m nbstripout -t"; fi

# Strip outputs in the working tree too (the git filter already keeps them out of commits).
strip: $(STAMP)
	$(PY) -m nbstripout --extra-keys "$(STRIP_KEYS)" notebooks/*/*.ipynb

# Debian's Chromium for the JupyterLab browser test (Playwright's own browser download
# cannot work offline). Skipped quietly where apt is not available or we are not root.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test is skipped (and fails when CI=true)"; }

lab: $(STAMP) git-filters
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=$(CURDIR) \
	  $(if $(filter 0,$(shell id -u)),--allow-root)  # containers run as root

# TensorBoard on every run folder's tensorboard/ (runs with --set report_to=tensorboard)
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir reports --host 127.0.0.1 --port $(or $(TB_PORT),6006)

bench: $(STAMP)
	$(PY) -m benchmarks.bench_train $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check sftlib tests benchmarks notebooks

clean-venv:
	rm -rf $(VENV)
