# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv (if missing) and install torch, detectron2 and this package into it once;
# later runs reuse it (the stamp file below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bmc-installed
DEMO_ARGS ?=
# e.g. make serve SERVE_ARGS="--backend torch" (models: BMC_DETECTOR_ONNX, ... or flags)
SERVE_ARGS ?=

.PHONY: setup demo demo-real serve test lint format docs

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml dev/bootstrap.sh
	PYTHON="$(PYTHON)" VENV="$(VENV)" bash dev/bootstrap.sh
	@touch $@

demo: $(STAMP)
	$(PY) -m bmc_detectron.tools.demo $(DEMO_ARGS)

# The same on marrow-like fields of real PBC cells (needs the shared data, $$BMC_SHARED_DATASETS):
# compose the fields (once), train the detector and the classifier, count and score the val
# fields; DEMO_ARGS="--count DIR" counts your own marrow fields with the models instead.
demo-real: $(STAMP)
	$(PY) -m bmc_detectron.tools.demo --data marrow_real $(DEMO_ARGS)

# The lab web page on http://127.0.0.1:8000, with the models `make demo` wrote (ONNX Runtime).
serve: $(STAMP)
	$(PY) -m bmc_detectron.tools.serve --no-auth --import-report output/demo/count --import-case-id demo $(SERVE_ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .

# The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link, an unknown
# anchor or a page missing from nav fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
