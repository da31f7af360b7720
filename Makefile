# Every target builds its own .venv from pyproject.toml, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
SPEC ?= specs/guide.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## run the guide spec end to end
	$(BIN)/trainflow run $(SPEC)

# The browser test drives Debian's Chromium through playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)  ## the whole suite, slow end-to-end tests included
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)  ## speed bars as side-by-side ratios; writes docs/benchmarks.md
	$(BIN)/python benchmarks/run_all.py

schema: $(STAMP)  ## regenerate the committed JSON Schema
	$(BIN)/trainflow schema --output specs/spec.schema.json

clean:
	rm -rf $(VENV) build *.egg-info
