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

.PHONY: help install test test-unit lint deploy-check run bench kafka-up kafka-down redis-up redis-down clean

help:
	@echo "make install | test | lint | deploy-check | run | bench [NAME=x] | kafka-up | kafka-down | redis-up | redis-down | clean"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
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

# Generated deployment files current, both k8s overlays build, alert rules and the local
# Prometheus config valid. Tools: kustomize (go install, into .local/bin) and promtool
# (Debian's prometheus package; installed when missing and run as root).
KUSTOMIZE := .local/bin/kustomize
deploy-check: $(STAMP)
	$(VENV)/bin/pledgeflow deploy render --check
	test -x $(KUSTOMIZE) || GOBIN=$(abspath .local/bin) go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
	for overlay in dev prod; do $(KUSTOMIZE) build deploy/k8s/overlays/$$overlay > /dev/null || exit 1; done
	command -v promtool > /dev/null || apt-get install -y -q --no-install-recommends prometheus
	promtool check rules deploy/prometheus/alerts.yml
	promtool check config deploy/local/prometheus.yml

run: install
	deploy/local/run.sh

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
