# The two README commands: `make sweep` (the default sweep on the tiny world) and `make test`.
# Both create .venv on first use; later runs reuse it (re-installed when pyproject.toml changes).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SPEC   ?= search_spaces/task_ratio.yaml
ARGS   ?=

.PHONY: sweep test venv lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

sweep: venv
	$(PY) -m orchestrator.sweep $(SPEC) $(ARGS)

test: venv
	$(PY) -m pytest $(ARGS)

lint: venv
	$(VENV)/bin/ruff check orchestrator trainers tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
