# opauth: `make run` serves https://localhost:8443 (nginx in front of gunicorn) and /pki/ on
# http://localhost:8080; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run run-apdl run-apdl-agent test lint typecheck init bench bench-peers bench-own bench-apdl bench-apdl-agent system-deps clean translations compile-translations lock

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The venv gets exactly the locked tree: every package pinned, every file checked against its hash.
# pyscard builds from source, so its build packages come first.
$(STAMP): $(BIN)/python requirements.lock requirements-dev.lock
	PYTHON=$(PYTHON) ./scripts/system-deps.sh build
	$(BIN)/pip install --disable-pip-version-check -q --require-hashes -r requirements-dev.lock
	touch $(STAMP)

# `make lock` after editing requirements*.txt: resolves from PyPI with uv (itself pinned and hash-checked),
# keeps every existing pin that still fits (LOCK_FLAGS=--upgrade to move them), same output on every machine.
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command "make lock" $(LOCK_FLAGS)
lock: $(BIN)/python
	awk '/^uv==/{p=1} p{print} p && !/\\$$/{exit}' requirements-dev.lock > $(VENV)/uv-requirement.txt
	$(BIN)/pip install --disable-pip-version-check -q --require-hashes --no-deps -r $(VENV)/uv-requirement.txt
	$(UV_COMPILE) -o requirements.lock requirements.txt
	$(UV_COMPILE) -c requirements.lock -o requirements-dev.lock requirements-dev.txt

init: $(STAMP) compile-translations
	$(BIN)/flask --app app init

run: init
	./scripts/system-deps.sh nginx
	$(BIN)/python scripts/serve.py

# opauth and the AP download module together (root): opauth's deployment as `make run` (or the one already
# serving), the module registered in it, a demo tenant and operator, the emulated card in a private pcscd,
# the module on https://localhost:8444. Ctrl-C stops both.
run-apdl: init
	./scripts/system-deps.sh nginx pcscd vsmartcard-vpcd
	$(BIN)/python scripts/apdl_demo.py

# The terminal card agent beside `APDL_CARD_TRANSPORT=agent make run-apdl` (root, a second terminal): the demo
# terminal's certificate from opauth and its registration (once), its own pcscd + vpcd + emulated card, then the
# agent, printing the pairing code to type in at 端末の組付け. Ctrl-C stops the agent and its card stack.
run-apdl-agent: $(STAMP) compile-translations
	./scripts/system-deps.sh pcscd vsmartcard-vpcd
	$(BIN)/python scripts/apdl_agent_demo.py

system-deps:
	./scripts/system-deps.sh

# ruff, mypy, and the import contracts in pyproject.toml ([tool.importlinter]: layers, independence).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: $(STAMP) system-deps lint compile-translations
	$(BIN)/pytest

# UI languages (Flask-Babel): Japanese msgids, English catalogue in translations/en/.
# `make translations` re-extracts after you add {{ _('...') }} strings; fill the new msgstr in the .po.
translations: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k lazy_gettext --no-location --sort-output -o translations/messages.pot .
	$(BIN)/pybabel -q update -i translations/messages.pot -d translations --no-fuzzy-matching --no-wrap
	$(BIN)/pybabel compile -d translations
	$(BIN)/pybabel -q extract -F apdl/babel.cfg -k lazy_gettext --no-location --sort-output -o apdl/translations/messages.pot .
	$(BIN)/pybabel -q update -i apdl/translations/messages.pot -d apdl/translations --no-fuzzy-matching --no-wrap
	$(BIN)/pybabel compile -d apdl/translations

compile-translations: $(STAMP)
	$(BIN)/pybabel -q compile -d translations
	$(BIN)/pybabel -q compile -d apdl/translations

# `make bench`: opauth beside cfssl, django-ca, a minimal Flask app and the raw limits in one run (one table,
# bench/peers.py; the peers come from ../shared/bench/peers, PEERS_DIR elsewhere), then business login.
bench: bench-peers
	$(BIN)/python -m bench.oidc

bench-peers: $(STAMP)
	./scripts/system-deps.sh wrk
	$(BIN)/python -m bench.peers

# opauth alone, against the raw P-256 signing rate (stdlib HTTP client, HTTP Basic issuance).
bench-own: $(STAMP)
	$(BIN)/python -m bench.run

# apdl card path: APDU round trips through a private pcscd + vsmartcard-vpcd + the emulated card (root).
bench-apdl: $(STAMP) system-deps
	$(BIN)/python -m bench.apdl

# apdl card agent relay: ms per APDU through a real agent process (mutual TLS, CRL per poll) beside the reader.
bench-apdl-agent: $(STAMP) system-deps
	$(BIN)/python -m bench.apdl_agent

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
