# The two README commands: `make sweep` (the default sweep on the tiny world) and `make test`.
# Both create .venv on first use; later runs reuse it (re-installed when pyproject.toml changes).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SPEC   ?= search_spaces/task_ratio.yaml
ARGS   ?=

.PHONY: sweep test venv browser lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

sweep: venv
	$(PY) -m orchestrator.sweep $(SPEC) $(ARGS)

test: venv browser
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

lint: venv
	$(VENV)/bin/ruff check orchestrator trainers tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
