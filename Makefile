# Pledgeflow developer commands. Every target works on a fresh clone and can be re-run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_DIR := deploy/local/kafka
STAMP := $(VENV)/.installed
JARS := $(KAFKA_DIR)/lib/.fetched
PYTEST_ARGS ?=
NAME ?=

.PHONY: lock help install test test-unit lint deploy-check run demo bench kafka-up kafka-down redis-up redis-down clean

help:
	@echo "make install | test | lint | deploy-check | run | demo | bench [NAME=x] | kafka-up | kafka-down | redis-up | redis-down | clean"

# Dependencies come from the hash-locked requirements-dev.lock (pip --require-hashes); the
# editable install after it adds only what a newer pyproject.toml names and the lock does not
# yet (tests/unit/ops/test_lock_files.py then asks for `make lock`).
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $@

$(JARS): $(KAFKA_DIR)/pom.xml
	$(KAFKA_DIR)/fetch.sh
	touch $@

install: $(STAMP) $(JARS)

test: install
	deploy/local/with-services.sh $(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/property $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	deploy/check/dependency-audit.sh

# Generated deployment files current; both k8s overlays build and validate offline (built-in
# kinds against the Kubernetes API schemas of PyPI kubernetes-validate, strict; KEDA and
# Prometheus-operator CRDs against npm @kubernetes-models; KEDA can reach Kafka); alert rules,
# their promtool unit tests and the local Prometheus config valid; every JSON Schema compiles
# in ajv strict mode. Tools install on first use: kustomize (go install, into .local/bin),
# promtool (Debian's prometheus package, as root), the npm validators (npm ci, deploy/check).
deploy-check: $(STAMP)
	$(VENV)/bin/pledgeflow deploy render --check
	$(VENV)/bin/pledgeflow deploy validate --kustomize "$$(deploy/check/kustomize-install.sh)" \
	  deploy/k8s/overlays/dev deploy/k8s/overlays/prod
	deploy/local/prometheus/install.sh
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	promtool check config deploy/local/prometheus.yml
	deploy/check/ajv-compile.sh

run: install
	deploy/local/run.sh

# `make run`'s stack in the background, a short `pledgeflow simulate` and its audit, then
# where to look; the stack runs until Ctrl-C (deploy/local/demo.sh).
demo: install
	deploy/local/demo.sh

bench: install
	deploy/local/with-services.sh $(PY) -m bench $(NAME)

kafka-up: install
	$(KAFKA_DIR)/kafka-up.sh

kafka-down:
	$(KAFKA_DIR)/kafka-down.sh

redis-up: $(STAMP)
	deploy/local/redis/redis-up.sh

redis-down:
	deploy/local/redis/redis-down.sh

clean: kafka-down redis-down
	rm -rf .local $(KAFKA_DIR)/lib .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results/*.json
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

# Regenerate the hash-locked requirements (image: requirements.lock; dev/CI:
# requirements-dev.lock) from pyproject.toml's pins, with pip-tools.
lock: $(STAMP)
	$(PY) -m pip install -q pip-tools==7.6.2
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links \
	  --no-emit-index-url -o requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links \
	  --no-emit-index-url --extra dev --extra bench -o requirements-dev.lock pyproject.toml
