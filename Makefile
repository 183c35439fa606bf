# opauth: `make run` serves HTTPS on https://localhost:8443; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint typecheck init bench bench-apdl system-deps clean translations compile-translations

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	PYTHON=$(PYTHON) ./scripts/system-deps.sh build
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

init: $(STAMP) compile-translations
	$(BIN)/flask --app app init

run: init
	$(BIN)/gunicorn --config config/gunicorn.conf.py

system-deps:
	./scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) system-deps lint compile-translations
	$(BIN)/pytest

# UI languages (Flask-Babel): Japanese msgids, English catalogue in translations/en/.
# `make translations` re-extracts after you add {{ _('...') }} strings; fill the new msgstr in the .po.
translations: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k lazy_gettext --no-location --sort-output -o translations/messages.pot .
	$(BIN)/pybabel -q update -i translations/messages.pot -d translations --no-fuzzy-matching --no-wrap
	$(BIN)/pybabel compile -d translations

compile-translations: $(STAMP)
	$(BIN)/pybabel -q compile -d translations

bench: $(STAMP)
	$(BIN)/python -m bench.run

# apdl card path: APDU round trips through a private pcscd + vsmartcard-vpcd + the emulated card (root).
bench-apdl: $(STAMP) system-deps
	$(BIN)/python -m bench.apdl

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
