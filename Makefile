# One entry point for running, testing and checking the worker.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help install daprd redis kafka test test-unit lint format run consume ask chaos asyncapi clean image lock
# The broker under `make bench` and `make chaos`: redis or kafka.
BROKER ?= redis

help:
	@echo "make run     - Redis + daprd (Redis pub/sub and state, as deployed) + the worker on the echo backend"
	@echo "               (make run BROKER=memory: in-memory pub/sub and state, no Redis)"
	@echo "make consume - examples/downstream_service.py on its own sidecar, printing the replies"
	@echo "make test    - install what is missing, then every test against real daprd, Redis and Kafka"
	@echo "make lint    - ruff and mypy (strict)"
	@echo "make daprd   - build (or find) the daprd binary"
	@echo "make image   - docker build the image (skips, saying why, without a Docker engine)"
	@echo "make lock    - pin the runtime dependencies (and [otel]) with hashes: requirements.lock"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

daprd:
	@bash scripts/daprd.sh

redis:
	@bash scripts/ensure-redis.sh

kafka:
	@bash scripts/ensure-kafka.sh >/dev/null

test: install redis kafka
	DAPRD="$$(bash scripts/daprd.sh)" KAFKA_LIBS="$$(bash scripts/ensure-kafka.sh)" \
		$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m "not dapr" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# BROKER=redis (default) or memory; ports and the Redis data folder: scripts/run-local.sh.
BROKER ?= redis
run: install
	@BROKER="$(BROKER)" bash scripts/run-local.sh

# Arguments for examples/downstream_service.py (without --follow: whole replies only).
CONSUME_ARGS ?= --follow
consume: install
	@bash scripts/consume-local.sh $(CONSUME_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

PROMPT ?= Tell me a story about a lighthouse keeper
ask: install
	$(VENV)/bin/llm-stream ask "$(PROMPT)"

chaos: install redis kafka
	DAPRD="$$(bash scripts/daprd.sh)" KAFKA_LIBS="$$(bash scripts/ensure-kafka.sh)" \
		$(PY) -m $(if $(filter kafka,$(BROKER)),bench.chaos_kafka,bench.chaos) $(CHAOS_ARGS)

asyncapi: install
	$(PY) -m worker.contract.asyncapi > docs/asyncapi.json

.PHONY: bench bench-full bench-concurrency
BENCH_ENV = DAPRD="$$(bash scripts/daprd.sh)" KAFKA_LIBS="$$(bash scripts/ensure-kafka.sh)"
bench: install redis kafka
	$(BENCH_ENV) $(PY) -m bench.bench --profile quick --broker $(BROKER) $(BENCH_ARGS)
	$(BENCH_ENV) $(PY) -m bench.concurrency --broker $(BROKER)

bench-full: install redis kafka
	$(BENCH_ENV) $(PY) -m bench.bench --profile full --broker $(BROKER) $(BENCH_ARGS)

# Who waits behind whom: the head-of-line scenario and 100 prompts over 50 conversations.
bench-concurrency: install redis kafka
	$(BENCH_ENV) $(PY) -m bench.concurrency --broker $(BROKER) $(BENCH_ARGS)

# Render every kustomize overlay into build/k8s/<overlay>.yaml (kustomize's Go API,
# built once into .cache/kustomize), then validate them against the pinned Kubernetes
# and Dapr schemas (tests/k8s/test_manifests.py).
.PHONY: manifests
manifests: install
	@mkdir -p build/k8s
	@render="$$(bash tools/kustomize/build.sh)" && for overlay in k8s/overlays/*/; do \
		name="$$(basename "$$overlay")"; \
		"$$render" "$$overlay" > "build/k8s/$$name.yaml" && echo "build/k8s/$$name.yaml"; \
	done
	$(PY) -m pytest -q -p no:cacheprovider tests/k8s/test_manifests.py

# The container image, tagged as k8s/base/kustomization.yaml names it (IMAGE=... to
# override); skips with its reason where no Docker engine runs.
image:
	@bash scripts/build-image.sh

# The image's dependencies, pinned with hashes (the Dockerfile installs exactly these).
# Run after changing [project] dependencies; tests/k8s/test_versions.py checks agreement.
lock: install
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --extra otel \
		--allow-unsafe --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml
