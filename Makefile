# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv (if missing) and install torch, detectron2 and this package into it once;
# later runs reuse it (the stamp file below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bmc-installed
DEMO_ARGS ?=

.PHONY: setup demo test lint format

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/bootstrap.sh
	PYTHON="$(PYTHON)" VENV="$(VENV)" bash scripts/bootstrap.sh
	@touch $@

demo: $(STAMP)
	$(PY) -m bmc_detectron.tools.run_demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
