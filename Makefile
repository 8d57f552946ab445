# optline: `make run` serves on SQLite with the console provider; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install kind, named after the pins: changing pyproject.toml or constraints.txt
# reinstalls. `make run` installs optline alone; `make test` adds the dev extras (a dev install
# also satisfies `make run`).
PINS := $(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(PINS)
DEV_STAMP := $(VENV)/.installed-dev-$(PINS)
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench install clean

install: $(DEV_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip==25.3"

$(RUN_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	test -f $(DEV_STAMP) || $(PIP) -e .
	rm -f $(VENV)/.installed-run-*
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(DEV_STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/optline migrate
	$(BIN)/optline serve --host $(HOST) --port $(PORT)

# The suite runs in one worker process per core (pytest-xdist); a test module's tests stay in one
# worker, so its module-scoped servers start once.
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n auto --dist loadscope

bench: $(DEV_STAMP)
	command -v wrk >/dev/null || (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk))
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var/*.db var/*.db-* .pytest_cache
