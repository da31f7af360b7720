# Every target builds its own .venv from pyproject.toml, so a fresh machine needs only python3 and make.
# VENV=/path/to/venv reuses an environment that already has trainflow's dependencies (the fresh-clone test
# does, to time a first run rather than a download); its code still comes from this checkout (PYTHONPATH).
PYTHON ?= python3
VENV ?= .venv
SPEC ?= specs/guide.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A migrated, empty Prefect database, made once with the venv: a new PREFECT_HOME starts from a copy of it
# instead of migrating (13 s here), which is what made the first run's temporary server time out.
TEMPLATE_DB := $(VENV)/prefect-template/prefect.db
PREFECT_HOME ?= $(HOME)/.prefect
PREFECT_DB := $(PREFECT_HOME)/prefect.db
TRAINFLOW := PYTHONPATH=$(CURDIR) $(BIN)/python -m flows.cli

.PHONY: run ui test test-fast bench schema clean

# The local venv is rebuilt when pyproject.toml changes; one passed in as VENV= is taken as it is.
# uv installs the same versions pip resolves (pip freeze compared): the venv took 58 s instead of pip's 112 s
# in a fresh clone here, as uv downloads and unpacks in parallel. --compile-bytecode keeps the first imports
# fast (uv does not compile by default; without it the first `import tensorflow, prefect` of each process took
# 13-15 s instead of 5 s). uv is pinned: its flags change between 0.x releases.
$(STAMP): $(if $(filter .venv,$(VENV)),pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv==0.13.10'
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[test]'
	rm -rf $(VENV)/prefect-template
	PREFECT_HOME=$(VENV)/prefect-template $(BIN)/prefect server database upgrade -y > /dev/null
	touch $(STAMP)

$(PREFECT_DB): | $(STAMP)
	mkdir -p $(PREFECT_HOME)
	test -e $(PREFECT_DB) || cp $(TEMPLATE_DB) $(PREFECT_DB)

run: $(STAMP) $(PREFECT_DB)  ## run the guide spec end to end
	$(TRAINFLOW) run $(SPEC)

ui: $(STAMP) $(PREFECT_DB)  ## the Prefect UI with every run so far, in the background (trainflow server stop ends it)
	$(TRAINFLOW) server start

# The browser test drives Debian's Chromium through playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Two workers: most tests wait on a subprocess or a server, so the 2-core machine runs two at a time. Each
# worker starts its own Prefect server, lazily, from the template database.
# Three workers were slower (the suite in place: 738 s against 604 s, 2026-12-07): TensorFlow, Prefect and
# their servers then share two cores three ways.
# The venv and Chromium are built side by side (-j2: uv and apt wait on the network and the disk, not on each
# other), which saves the shorter of the two on a fresh machine.
# --durations=20: every run prints its twenty slowest tests, where the suite's time goes (issue 26).
test:  ## the whole suite, slow end-to-end tests included
	$(MAKE) --no-print-directory -j2 $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -n 2 --durations=20

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"

bench: $(STAMP)  ## speed bars as side-by-side ratios; writes docs/benchmarks.md
	$(BIN)/python benchmarks/run_all.py

schema: $(STAMP)  ## regenerate the committed JSON Schemas (and the Keras layers they complete, from Keras itself)
	$(TRAINFLOW) schema --kind layers --output tasks/model/keras_layers.json
	$(TRAINFLOW) schema --output specs/spec.schema.json
	$(TRAINFLOW) schema --kind scoring --output specs/scoring.schema.json

clean:
	rm -rf $(VENV) build *.egg-info
