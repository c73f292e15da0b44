# One entry point for humans and CI. Every target creates what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TOOLS := .venv-tools
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
ENV ?= dev
# Absolute on purpose: SAM resolves a relative --config-file against the template's directory (infra/)
# when --template-file is given, and against the working directory otherwise.
SAMCONFIG := $(CURDIR)/samconfig.toml
export SAM_CLI_TELEMETRY := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install tools run test lint typecheck validate unit integration e2e infra build deploy bench reliability openapi clean

help:
	@echo "make run          - the whole system locally (moto on :4566, API on :3000), no Docker"
	@echo "make test         - ruff, mypy, template gates and every test tier"
	@echo "make bench        - benchmarks (bench/results.json)"
	@echo "make reliability  - fault-injection scenarios"
	@echo "make build | validate | deploy ENV=dev|prod"

# The layer's pins (layers/common/constraints.txt) hold here too: tests run against what ships.
$(VENV)/.installed: pyproject.toml layers/common/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c layers/common/constraints.txt -e '.[dev]'
	touch $@

# aws-sam-cli pins its own boto3/botocore, so it (and checkov) live in a separate venv.
$(TOOLS)/.installed: infra/requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q -r infra/requirements-tools.txt
	touch $@

install: $(VENV)/.installed
tools: $(TOOLS)/.installed

# Options of `jobtracker local up`, e.g. make run ARGS="--api-port 3001 --aws-port 4567 --no-demo"
run: install
	$(BIN)/jobtracker local up $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy layers/common/jobtracker_common functions/job_runner/job_runner functions/tracker/tracker \
		functions/notifier/notifier functions/api/api local/jobtracker_local

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

e2e: install
	$(BIN)/pytest tests/e2e -q

infra: install tools
	$(BIN)/pytest tests/infra -q

# Deploy gates: sam's own lint, then cfn-lint (SAM + translated), our policy rules, checkov, sam build.
validate: install tools
	$(TOOLS)/bin/sam validate --lint --template-file infra/template.yaml --config-file $(SAMCONFIG)
	$(BIN)/python -m jobtracker_local.gates all infra/template.yaml

build: install tools
	$(TOOLS)/bin/sam build --template-file infra/template.yaml --config-file $(SAMCONFIG) --config-env $(ENV)

deploy: build
	$(TOOLS)/bin/sam deploy --template-file .aws-sam/build/template.yaml --config-file $(SAMCONFIG) --config-env $(ENV)

test: lint typecheck validate
	$(BIN)/pytest tests -q -p no:cacheprovider

bench: install
	$(BIN)/python -m bench

reliability: install
	$(BIN)/python -m bench.reliability

openapi: install
	$(BIN)/python -m api.openapi > docs/openapi.json

clean:
	rm -rf .aws-sam .local .mypy_cache .ruff_cache .pytest_cache
