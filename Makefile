# Esquadrão — developer commands. A fresh machine needs only Python 3.11+ and make:
# uv is bootstrapped from PyPI into .tools/ when it is not on PATH.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
BUF_VERSION := 1.75.0

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
BUF := .tools/node_modules/.bin/buf
RUN := $(UV) run --frozen

.PHONY: help sync run test test-unit test-integration lint fmt typecheck proto proto-check migrate bench bench-contacts bench-contacts-import bench-whatsapp bench-whatsapp-ratelimit k8s-topics clean

help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard */pyproject.toml */*/pyproject.toml)
	$(UV) sync --frozen --all-packages
	@touch $@

sync: .venv/.synced ## install every package and tool into .venv

run: sync ## start the whole suite with embedded broker, Postgres and Redis
	$(RUN) esquadrao-stack run

test: sync ## all tests: unit, integration and e2e (starts embedded servers unless URLs are given)
	$(RUN) pytest

test-unit: sync ## fast tests only
	$(RUN) pytest -m unit

lint: sync $(BUF) ## ruff, buf lint and buf breaking against main
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	cd proto && ../$(BUF) lint
	if git cat-file -e main:proto/buf.yaml 2>/dev/null; then \
		cd proto && ../$(BUF) breaking --against '../.git#branch=main,subdir=proto'; \
	else echo "buf breaking: skipped, main has no proto/buf.yaml to compare with yet"; fi

fmt: sync ## format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: sync ## mypy (strict) on the sources
	$(RUN) mypy libs/common/src libs/devstack/src libs/wasim/src services/contacts/src services/whatsapp/src bench

proto: sync ## regenerate Python code (and .pyi stubs) from proto/
	$(RUN) python -m esquadrao_devstack.protogen

migrate: sync ## run every service's migrations against the configured databases
	$(RUN) esquadrao-stack migrate

bench: sync ## all benchmarks: platform limits, then each service's
	$(RUN) python -m bench.platform
	$(RUN) python -m bench.contacts_api
	$(RUN) python -m bench.contacts_import
	$(RUN) python -m bench.whatsapp_send
	$(RUN) python -m bench.whatsapp_ratelimit

bench-contacts: sync ## contacts API GET/list latency at fixed rates (open-loop load)
	$(RUN) python -m bench.contacts_api

bench-contacts-import: sync ## contacts import of a 100k-row CSV: rows/s, peak memory, idempotent re-run
	$(RUN) python -m bench.contacts_import

bench-whatsapp: sync ## whatsapp worker: sends/s, interactive p99 under a bulk backlog, memory per idle session, sessions reconnected when a worker joins
	$(RUN) python -m bench.whatsapp_send

bench-whatsapp-ratelimit: sync ## shared token bucket accuracy with 8 worker processes, adaptive rate trace
	$(RUN) python -m bench.whatsapp_ratelimit

k8s-topics: sync ## regenerate k8s KafkaTopic resources from the topic catalog
	$(RUN) esquadrao-stack k8s-topics > k8s/base/kafka-topics.yaml

clean: ## remove local data (.run/) and caches
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
