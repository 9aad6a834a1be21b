# Entry points. `make up` runs the platform; `make test` runs every test. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := shared/events shared/runtime services/sales services/marketing services/service-desk services/analytics
SOURCES := $(foreach p,$(PACKAGES),$(p)/src)
PYTEST_ARGS ?=

.PHONY: up test test-unit test-integration lint format bench bench-smoke schemas schemas-check token clean venv

venv: $(STAMP)

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip -c constraints.txt
	$(BIN)/python -m pip install --quiet setuptools wheel -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-build-isolation -c constraints.txt \
		-e shared/events -e 'shared/runtime[local]' -e services/sales -e services/marketing \
		-e services/service-desk -e services/analytics -r requirements-dev.txt
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/crm up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(SOURCES)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schemas: $(STAMP)
	$(BIN)/crm-events generate --out shared/events/schemas

schemas-check: $(STAMP)
	$(BIN)/crm-events check --published shared/events/schemas

bench: $(STAMP)
	$(BIN)/python -m bench run

bench-smoke: $(STAMP)
	$(BIN)/python -m bench run --smoke

token: $(STAMP)
	$(BIN)/crm token --role admin --user admin

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
