# The two README commands: `make sweep` (the default sweep on the tiny world) and `make test`.
# Both create .venv on first use with the tested set of versions (requirements.lock); later runs
# reuse it (re-installed when pyproject.toml or the lock changes).
# `make test-latest` runs the suite in .venv-latest on the newest versions pyproject's ranges admit,
# so an upgrade that breaks us is found here first; `make lock` then records that set as the tested one.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
LOCK   := requirements.lock
LATEST := .venv-latest
SPEC   ?= search_spaces/task_ratio.yaml
ARGS   ?=

.PHONY: sweep test test-latest lock venv browser postgres lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $@

sweep: venv
	$(PY) -m orchestrator.sweep $(SPEC) $(ARGS)

test: venv browser postgres
	$(PY) -m pytest $(ARGS)

# The MLflow UI test screenshots the runs page with Debian's headless chromium. Installed here when
# missing and apt-get can (root); otherwise that one test is skipped and says why.
browser:
	@test -x /usr/bin/chromium || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the MLflow UI test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	      || echo "could not install chromium: the MLflow UI screenshot test will be skipped"; \
	  else echo "chromium missing (apt-get install chromium): the MLflow UI screenshot test will be skipped"; fi; }

# tests/test_tracking_postgres.py starts a real PostgreSQL from Debian's binaries under the MLflow
# server it tests. Installed here when missing and apt-get can (root); otherwise those tests are skipped.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's postgresql for the PostgreSQL tracking tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
	      || echo "could not install postgresql: the PostgreSQL tracking tests will be skipped"; \
	  else echo "PostgreSQL missing (apt-get install postgresql): the PostgreSQL tracking tests will be skipped"; fi; }

# The newest releases the ranges in pyproject.toml admit (no lock), in a venv of their own.
test-latest: browser postgres
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,cluster]'
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|ray|optuna|mlflow|diffusers|transformers|accelerate|polars|pydantic)=='
	$(LATEST)/bin/python -m pytest $(ARGS)

# Record the set .venv-latest passed with as the tested one.
lock:
	test -x $(LATEST)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ echo "# The tested set: what \`make\` installs (pip install -c requirements.lock -e '.[dev]')."; \
	  echo "# Regenerate after a green \`make test-latest\`: make lock.  pyproject.toml keeps the ranges."; \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' | LC_ALL=C sort -f; } > $(LOCK)

lint: venv
	$(VENV)/bin/ruff check orchestrator trainers tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache
